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
PG_ADMIN_URL=${DEVID_TEST_POSTGRES_URL:-postgres://postgres@127.0.0.1:5432/postgres}
PROFILE=${PROFILE:-release}
if [ "$PROFILE" = release ]; then
  cargo build --release -q -p devid-server --bin devid-server --example bench_bulk
else
  cargo build -q -p devid-server --bin devid-server --example bench_bulk
fi
BIN=target/$PROFILE/devid-server
BENCH=target/$PROFILE/examples/bench_bulk
work=$(mktemp -d)
pids=()
db=""
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  sleep 0.5
  [ -n "$db" ] && psql -q "$PG_ADMIN_URL" -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" >/dev/null 2>&1
  rm -rf "$work"
}
trap cleanup EXIT

port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

start_server() { # name, extra args... (sets URL and SERVER_PID)
  local name=$1; shift
  local p; p=$(port)
  "$BIN" --listen "127.0.0.1:$p" --data-dir "$work/$name" "$@" >"$work/$name.log" 2>&1 &
  SERVER_PID=$!
  pids+=("$SERVER_PID")
  for _ in $(seq 1 100); do grep -q "listening on" "$work/$name.log" 2>/dev/null && break; sleep 0.1; done
  URL="http://127.0.0.1:$p"
}

measure() { # label, db size command, command...
  local label=$1 size_cmd=$2; shift 2
  local s0 s1 l0 out
  s0=$(awk '/^cpu /{print $9}' /proc/stat)
  l0=$(cut -d' ' -f1 /proc/loadavg)
  out=$("$@")
  s1=$(awk '/^cpu /{print $9}' /proc/stat)
  echo "$out" | sed "s/^{/{\"backend\":\"$label\",\"load_before\":$l0,\"load_after\":$(cut -d' ' -f1 /proc/loadavg),\"steal_ticks\":$((s1 - s0)),\"db_bytes\":$(eval "$size_cmd"),/"
}

echo "# $(date -u +%FT%TZ) $PROFILE build, $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)" >&2
start_server sqlite
measure sqlite "du -cb $work/sqlite/devid.db* | tail -1 | cut -f1" \
  "$BENCH" --url "$URL" --token-file "$work/sqlite/admin.token" --count "$COUNT"
kill "$SERVER_PID"

db="devid_bench_$RANDOM"
psql -q "$PG_ADMIN_URL" -c "CREATE DATABASE $db" >/dev/null
start_server postgres --database-url "${PG_ADMIN_URL%/*}/$db"
measure postgres "psql -qtA '$PG_ADMIN_URL' -c \"SELECT pg_database_size('$db')\"" \
  "$BENCH" --url "$URL" --token-file "$work/postgres/admin.token" --count "$COUNT"
kill "$SERVER_PID"
