#!/usr/bin/env bash
# The project's test command (README, and .ci/run calls it): every test, on SQLite and on
# PostgreSQL, including the end-to-end tests with real Mosquitto.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
export DEVID_TEST_POSTGRES_URL="${DEVID_TEST_POSTGRES_URL:-postgres://postgres@127.0.0.1:5432/postgres}"
# A test that cannot reach PostgreSQL fails instead of leaving its PostgreSQL half out.
export DEVID_TEST_REQUIRE_POSTGRES=1
# Tests make a fresh database each, named devid_test_p<pid>_... after the test process that made
# it. Drop those whose process has ended, before the run (what earlier runs left) and after it:
# a test process that is still running (another run beside this one) keeps its databases.
drop_ended_test_databases() {
  psql -qAt "$DEVID_TEST_POSTGRES_URL" -c "SELECT datname FROM pg_database WHERE datname LIKE 'devid\_test\_p%'" |
    while read -r db; do
      pid="${db#devid_test_p}"
      pid="${pid%%_*}"
      if [[ "$pid" =~ ^[0-9]+$ ]] && ! kill -0 "$pid" 2>/dev/null; then
        psql -q "$DEVID_TEST_POSTGRES_URL" -c "DROP DATABASE IF EXISTS \"$db\" WITH (FORCE)" >/dev/null || true
      fi
    done
}
drop_ended_test_databases
trap "drop_ended_test_databases || true" EXIT
# The end-to-end tests run the binaries and load the plugin from target/debug.
cargo build --workspace --all-targets
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --no-fail-fast "$@"
else
  cargo test --workspace --no-fail-fast "$@"
fi
