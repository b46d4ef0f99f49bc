#!/usr/bin/env bash
# Registration benchmark. Builds release binaries, starts a devid-server on
# SQLite (temp data dir) and on PostgreSQL (fresh database), and registers devices over HTTP with
# CSRs made beforehand: single registrations at concurrency 16, and batches of 1,000.
# With cfssl installed (Debian golang-cfssl), measures cfssl's HTTP signer in the same run, storing
# nothing and with its SQLite store. Prints one JSON line per measurement, with the steal time,
# and finally (on stderr) the single-thread cost of the CSR check and issuance (issue_bench).
# Usage: scripts/bench.sh [single_count] [batch_count]
set -euo pipefail
cd "$(dirname "$0")/.."
SINGLE=${1:-30000}
BATCH=${2:-100000}
PROFILE=release
EXAMPLES="bench_register issue_bench"
. scripts/bench-lib.sh

run() { # backend label, db size command, url, token file
  local label=$1 size=$2 url=$3 token=$4
  echo "# $label: $SINGLE single registrations, concurrency 16" >&2
  measure "$label" "$size" "$BENCH" --url "$url" --token-file "$token" --mode single --count "$SINGLE" --concurrency 16 --prefix "s$RANDOM"
  echo "# $label: $BATCH devices in batches of 1000" >&2
  measure "$label" "$size" "$BENCH" --url "$url" --token-file "$token" --mode batch --count "$BATCH" --batch 1000 --concurrency 2 --prefix "b$RANDOM"
}

start_server sqlite
run sqlite sqlite_size "$URL" "$work/sqlite/admin.token"
kill "$SERVER_PID"

pg_database
start_server postgres --database-url "$DB_URL"
run postgres pg_size "$URL" "$work/postgres/admin.token"
kill "$SERVER_PID"

# cfssl serve, signing the same CSRs: storing nothing, then with its SQLite certificate store
# (cfssl's own certdb schema, WAL, the driver's default synchronous=FULL: durable like devid's).
cfssl_run() { # label, extra cfssl args...
  local label=$1; shift
  local p; p=$(port)
  (cd "$work/cfssl" && exec cfssl serve -address 127.0.0.1 -port "$p" -ca ca.pem -ca-key ca-key.pem \
    -config config.json "$@" >"$work/$label.log" 2>&1) &
  local pid=$!
  pids+=("$pid")
  for _ in $(seq 1 100); do curl -s "http://127.0.0.1:$p/api/v1/cfssl/scaninfo" >/dev/null 2>&1 && break; sleep 0.1; done
  echo "# $label: $SINGLE signatures, concurrency 16" >&2
  measure "$label" no_size "$BENCH" --url "http://127.0.0.1:$p" --mode cfssl --count "$SINGLE" --concurrency 16
  kill "$pid"
}
if command -v cfssl >/dev/null 2>&1; then
  mkdir -p "$work/cfssl" && cd "$work/cfssl"
  echo '{"CN":"bench CA","key":{"algo":"ecdsa","size":256}}' | cfssl gencert -initca - 2>/dev/null | cfssljson -bare ca
  echo '{"signing":{"default":{"usages":["digital signature","client auth"],"expiry":"87600h"}}}' > config.json
  python3 - <<'PY'
import sqlite3
c = sqlite3.connect("certs.db")
c.execute("PRAGMA journal_mode=WAL")
c.executescript("""
CREATE TABLE certificates (serial_number blob NOT NULL, authority_key_identifier blob NOT NULL,
  ca_label blob, status blob NOT NULL, reason int, expiry timestamp, revoked_at timestamp,
  pem blob NOT NULL, PRIMARY KEY(serial_number, authority_key_identifier));
CREATE TABLE ocsp_responses (serial_number blob NOT NULL, authority_key_identifier blob NOT NULL,
  body blob NOT NULL, expiry timestamp, PRIMARY KEY(serial_number, authority_key_identifier));
""")
PY
  echo "{\"driver\":\"sqlite3\",\"data_source\":\"$work/cfssl/certs.db\"}" > db.json
  cd - >/dev/null
  cfssl_run cfssl-nodb
  cfssl_run cfssl-sqlite -db-config "$work/cfssl/db.json"
else
  echo "# cfssl not installed (apt-get install golang-cfssl): no peer figures" >&2
fi

echo "# CPU floor per registration, single thread (examples/issue_bench.rs):" >&2
target/release/examples/issue_bench 1 | sed 's/^/# /' >&2
