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
PROFILE=release
EXAMPLE=bench_est
. scripts/bench-lib.sh

run() { # label, extra server args...
  local label=$1; shift
  local t; t=$(port)
  start_server "$label" --tls-listen "127.0.0.1:$t" --public-url https://localhost "$@"
  echo "# $label: $COUNT registrations, then $COUNT EST re-enrollments, concurrency 16" >&2
  "$BENCH" --url "$URL" --tls-url "https://localhost:$t" \
    --root "$work/$label/ca/root.crt" --token-file "$work/$label/admin.token" \
    --count "$COUNT" --concurrency 16 | sed "s/^{/{\"backend\":\"$label\",/"
  echo "{\"backend\":\"$label\",\"load\":$(cut -d' ' -f1 /proc/loadavg),\"steal_ticks\":$(( $(awk '/^cpu /{print $9}' /proc/stat) - STEAL0 ))}"
  kill "$SERVER_PID"
}

STEAL0=$(awk '/^cpu /{print $9}' /proc/stat)
run sqlite
STEAL0=$(awk '/^cpu /{print $9}' /proc/stat)
pg_database
run postgres --database-url "$DB_URL"
