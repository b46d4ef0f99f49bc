#!/usr/bin/env bash
# The project's test command (README, and .ci/run calls it): every test, on SQLite and on
# PostgreSQL, including the end-to-end tests with real Mosquitto.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
export DEVID_TEST_POSTGRES_URL="${DEVID_TEST_POSTGRES_URL:-postgres://postgres@127.0.0.1:5432/postgres}"
# A test that cannot reach PostgreSQL fails instead of leaving its PostgreSQL half out.
export DEVID_TEST_REQUIRE_POSTGRES=1
# Tests make a fresh database each (devid_test_*); drop what earlier runs left behind.
psql -qAt "$DEVID_TEST_POSTGRES_URL" -c "SELECT datname FROM pg_database WHERE datname LIKE 'devid\_test\_%'" |
  while read -r db; do psql -q "$DEVID_TEST_POSTGRES_URL" -c "DROP DATABASE IF EXISTS \"$db\" WITH (FORCE)" >/dev/null || true; done
# The end-to-end tests run the binaries and load the plugin from target/debug.
cargo build --workspace --all-targets
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --no-fail-fast "$@"
else
  cargo test --workspace --no-fail-fast "$@"
fi
