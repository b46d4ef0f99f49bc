#!/usr/bin/env bash
# Builds every fuzz target (fuzz/, its own workspace) and runs each for a few seconds on its seed
# corpus: a smoke run that catches a target that no longer builds or crashes at once. Stable Rust
# suffices: these are the coverage flags cargo-fuzz passes, minus the sanitizer (which needs
# nightly). For a long run of one target see fuzz/README.md.
#   scripts/fuzz.sh [seconds per target, default 5]
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
secs="${1:-5}"
target="$(rustc -vV | sed -n 's/^host: //p')"
# --target keeps these flags off build scripts and proc macros (they would not link).
export RUSTFLAGS="--cfg fuzzing -Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4 \
-Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table \
-Cllvm-args=-sanitizer-coverage-trace-compares -Cdebug-assertions -Coverflow-checks"
cargo build --release --locked --target "$target"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
for name in $(sed -n 's/^name = "\(.*\)"$/\1/p' Cargo.toml | grep -v '^devid-fuzz$'); do
  echo "fuzz: $name for ${secs}s"
  # New inputs go to the first directory (scratch), the seed corpus stays as committed.
  mkdir -p "$work/$name" artifacts/"$name"
  if "target/$target/release/$name" "$work/$name" "corpus/$name" -max_total_time="$secs" \
    -max_len=4096 -artifact_prefix="artifacts/$name/" -print_final_stats=1 >"$work/$name.log" 2>&1; then
    grep '^stat::number_of_executed_units' "$work/$name.log" || true
  else
    tail -n 30 "$work/$name.log"
    echo "fuzz: $name failed (the input is in fuzz/artifacts/$name/)"
    exit 1
  fi
done
