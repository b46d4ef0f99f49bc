#!/usr/bin/env bash
# CA keys in files against CA keys in a SoftHSM2 token, in the same run: starts two release
# devid-servers on SQLite (temporary data directories), one with file keys and one with its keys
# made in a fresh SoftHSM2 token, and registers devices over HTTP with CSRs made beforehand
# (single registrations at concurrency 16, then batches of 1,000), alternating the two servers
# round by round so a slow moment of the machine does not fall on one side only. Prints one JSON
# line per measurement, labelled with the keys' home, the round and the steal time.
# Usage: scripts/bench-hsm.sh [single_count] [batch_count] [rounds]
set -euo pipefail
cd "$(dirname "$0")/.."
SINGLE=${1:-5000}
BATCH=${2:-20000}
ROUNDS=${3:-2}
MODULE=${DEVID_SOFTHSM_MODULE:-/usr/lib/softhsm/libsofthsm2.so}
[ -e "$MODULE" ] || { echo "bench-hsm: no SoftHSM2 module at $MODULE (scripts/setup.sh installs it)" >&2; exit 1; }
cargo build --release -q -p devid-server --bin devid-server --example bench_register
BIN=target/release/devid-server
BENCH=target/release/examples/bench_register
work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  sleep 0.5
  rm -rf "$work"
}
trap cleanup EXIT

port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

start_server() { # name, extra args... (prints the URL)
  local name=$1; shift
  local p; p=$(port)
  "$BIN" --listen "127.0.0.1:$p" --data-dir "$work/$name" "$@" >"$work/$name.log" 2>&1 &
  pids+=("$!")
  for _ in $(seq 1 100); do grep -q "listening on" "$work/$name.log" 2>/dev/null && break; sleep 0.1; done
  echo "http://127.0.0.1:$p"
}

measure() { # label, round, command...
  local label=$1 round=$2; shift 2
  local s0 s1 out
  s0=$(awk '/^cpu /{print $9}' /proc/stat)
  out=$("$@")
  s1=$(awk '/^cpu /{print $9}' /proc/stat)
  echo "$out" | sed "s/^{/{\"keys\":\"$label\",\"round\":$round,\"steal_ticks\":$((s1 - s0)),/"
}

mkdir -p "$work/softhsm/tokens"
printf 'directories.tokendir = %s\nobjectstore.backend = file\nlog.level = ERROR\n' \
  "$work/softhsm/tokens" >"$work/softhsm/softhsm2.conf"
export SOFTHSM2_CONF="$work/softhsm/softhsm2.conf"
softhsm2-util --init-token --free --label devid-bench --pin 1234 --so-pin 5678 >/dev/null
printf '1234\n' >"$work/softhsm/pin"

echo "# $(date -u +%FT%TZ) $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)" >&2
files_url=$(start_server files)
token_url=$(start_server token --pkcs11-module "$MODULE" --pkcs11-token devid-bench \
  --pkcs11-pin-file "$work/softhsm/pin")
for round in $(seq 1 "$ROUNDS"); do
  for side in files token; do
    url=files_url; [ "$side" = token ] && url=token_url
    echo "# round $round, $side keys: $SINGLE single registrations, concurrency 16" >&2
    measure "$side" "$round" "$BENCH" --url "${!url}" --token-file "$work/$side/admin.token" \
      --mode single --count "$SINGLE" --concurrency 16 --prefix "s$round$RANDOM"
    echo "# round $round, $side keys: $BATCH devices in batches of 1000" >&2
    measure "$side" "$round" "$BENCH" --url "${!url}" --token-file "$work/$side/admin.token" \
      --mode batch --count "$BATCH" --batch 1000 --concurrency 2 --prefix "b$round$RANDOM"
  done
done
