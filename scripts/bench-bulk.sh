#!/usr/bin/env bash
# Recall benchmark: builds release binaries, starts a devid-server on SQLite (temp data dir,
# synchronous=FULL) and on PostgreSQL (fresh database), registers COUNT devices of one lot in
# batches, revokes the lot in one call, and measures the revocation, the CRL regeneration and
# its size, and a broker-style read of the feed (examples/bench_bulk.rs). Prints one JSON line
# per backend, labelled with the load average, the steal time and the database size.
# Usage: scripts/bench-bulk.sh [count]   (PROFILE=debug runs the debug build instead)
set -euo pipefail
cd "$(dirname "$0")/.."
COUNT=${1:-100000}
PROFILE=${PROFILE:-release}
EXAMPLE=bench_bulk
. scripts/bench-lib.sh

start_server sqlite
measure sqlite sqlite_size "$BENCH" --url "$URL" --token-file "$work/sqlite/admin.token" --count "$COUNT"
kill "$SERVER_PID"

pg_database
start_server postgres --database-url "$DB_URL"
measure postgres pg_size "$BENCH" --url "$URL" --token-file "$work/postgres/admin.token" --count "$COUNT"
kill "$SERVER_PID"
