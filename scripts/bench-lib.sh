# Shared by the benchmarks (bench.sh, bench_est.sh, bench-bulk.sh, bench-scale.sh); source it
# after setting PROFILE (release or debug) and EXAMPLE (the example to build and run). It builds devid-server
# and the example, makes a temporary work directory removed on exit with the servers started
# and the PostgreSQL database made (start_server, pg_database), and measures a run labelled
# with the load average, the steal time and the database size (measure).
# BUILD=0 runs the binaries already built (say, after a change of formatting only).
PG_ADMIN_URL=${DEVID_TEST_POSTGRES_URL:-postgres://postgres@127.0.0.1:5432/postgres}
# EXAMPLES (space-separated) builds more than one example; BENCH is the first.
EXAMPLES=${EXAMPLES:-$EXAMPLE}
examples=()
for e in $EXAMPLES; do examples+=(--example "$e"); done
if [ "${BUILD:-1}" = 0 ]; then
  :
elif [ "$PROFILE" = release ]; then
  cargo build --release -q -p devid-server --bin devid-server "${examples[@]}"
else
  cargo build -q -p devid-server --bin devid-server "${examples[@]}"
fi
BIN=target/$PROFILE/devid-server
BENCH=target/$PROFILE/examples/${EXAMPLES%% *}
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

pg_database() { # makes a fresh database (dropped on exit); sets db and DB_URL
  db="devid_bench_$RANDOM"
  psql -q "$PG_ADMIN_URL" -c "CREATE DATABASE $db" >/dev/null
  # PG_EXPLAIN_MS=N: PostgreSQL's server log gets the plan, with actual rows and times, of each
  # statement on this database that runs longer than N ms (auto_explain).
  if [ -n "${PG_EXPLAIN_MS:-}" ]; then
    psql -q "$PG_ADMIN_URL" -c "ALTER DATABASE $db SET session_preload_libraries = 'auto_explain'" \
      -c "ALTER DATABASE $db SET auto_explain.log_min_duration = '${PG_EXPLAIN_MS}ms'" \
      -c "ALTER DATABASE $db SET auto_explain.log_analyze = on" >/dev/null
  fi
  DB_URL="${PG_ADMIN_URL%/*}/$db"
}

sqlite_size() { du -cb "$work/sqlite/devid.db"* | tail -1 | cut -f1; }
pg_size() { psql -qtA "$PG_ADMIN_URL" -c "SELECT pg_database_size('$db')"; }
no_size() { echo null; }

measure() { # label, db size command, command...
  local label=$1 size_cmd=$2; shift 2
  local s0 s1 l0 out
  s0=$(awk '/^cpu /{print $9}' /proc/stat)
  l0=$(cut -d' ' -f1 /proc/loadavg)
  out=$("$@")
  s1=$(awk '/^cpu /{print $9}' /proc/stat)
  echo "$out" | sed "s/^{/{\"backend\":\"$label\",\"load_before\":$l0,\"load_after\":$(cut -d' ' -f1 /proc/loadavg),\"steal_ticks\":$((s1 - s0)),\"db_bytes\":$($size_cmd),/"
}

echo "# $(date -u +%FT%TZ) $PROFILE build of $(git rev-parse --short HEAD), $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)" >&2
