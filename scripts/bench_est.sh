#!/usr/bin/env bash
# EST re-enrollment benchmark: builds release binaries, starts a devid-server with its TLS
# listener on SQLite (temp data dir) and on PostgreSQL (fresh database), and runs
# server/examples/bench_est.rs against each: COUNT registrations with POST /v1/devices, then COUNT
# re-enrollments over TLS with client-certificate authentication, both at concurrency 16, in one
# run. Prints the JSON lines of each phase and the ratio, with the steal time.
# Usage: scripts/bench_est.sh [count]
set -euo pipefail
cd "$(dirname "$0")/.."
COUNT=${1:-5000}
PG_ADMIN_URL=${DEVID_TEST_POSTGRES_URL:-postgres://postgres@127.0.0.1:5432/postgres}
cargo build --release -q -p devid-server --bin devid-server --example bench_est
BIN=target/release/devid-server
BENCH=target/release/examples/bench_est
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

run() { # label, extra server args...
  local label=$1; shift
  local p t; p=$(port); t=$(port)
  "$BIN" --listen "127.0.0.1:$p" --tls-listen "127.0.0.1:$t" --public-url https://localhost \
    --data-dir "$work/$label" "$@" >"$work/$label.log" 2>&1 &
  pids+=("$!")
  for _ in $(seq 1 100); do grep -q "listening on" "$work/$label.log" 2>/dev/null && break; sleep 0.1; done
  local s0 s1
  s0=$(awk '/^cpu /{print $9}' /proc/stat)
  echo "# $label: $COUNT registrations, then $COUNT EST re-enrollments, concurrency 16" >&2
  "$BENCH" --url "http://127.0.0.1:$p" --tls-url "https://localhost:$t" \
    --root "$work/$label/ca/root.crt" --token-file "$work/$label/admin.token" \
    --count "$COUNT" --concurrency 16 | sed "s/^{/{\"backend\":\"$label\",/"
  s1=$(awk '/^cpu /{print $9}' /proc/stat)
  echo "{\"backend\":\"$label\",\"steal_ticks\":$((s1 - s0))}"
}

run sqlite
db="devid_bench_est_$RANDOM"
psql -q "$PG_ADMIN_URL" -c "CREATE DATABASE $db" >/dev/null
run postgres --database-url "${PG_ADMIN_URL%/*}/$db"
