#!/usr/bin/env bash
# Fleet at scale: builds release binaries, starts a devid-server on SQLite (temp data dir,
# synchronous=FULL) and on PostgreSQL (fresh database, dropped after), registers COUNT devices
# in lots of 100,000, recalls one lot, and measures registration at the start and at the end,
# the recall, the CRL, a broker catching up with the feed, the fleet summary and the console's
# device page (examples/bench_scale.rs). Prints one JSON line per backend, labelled with the
# load average, the steal time and the database size.
# Usage: scripts/bench-scale.sh [count] [backends]   (backends: "sqlite postgres" by default;
# PROFILE=debug runs the debug build instead)
set -euo pipefail
cd "$(dirname "$0")/.."
COUNT=${1:-1000000}
BACKENDS=${2:-sqlite postgres}
PROFILE=${PROFILE:-release}
EXAMPLE=bench_scale
. scripts/bench-lib.sh

for backend in $BACKENDS; do
  case $backend in
    sqlite)
      start_server sqlite
      measure sqlite sqlite_size "$BENCH" --url "$URL" --token-file "$work/sqlite/admin.token" --count "$COUNT"
      ;;
    postgres)
      pg_database
      start_server postgres --database-url "$DB_URL"
      measure postgres pg_size "$BENCH" --url "$URL" --token-file "$work/postgres/admin.token" --count "$COUNT"
      ;;
  esac
  kill "$SERVER_PID"
done
