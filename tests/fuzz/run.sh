#!/usr/bin/env bash
# Coverage-guided fuzzing of one target of src/fuzz.rs with libFuzzer, on the stable toolchain.
#
#   bash tests/fuzz/run.sh TARGET SECONDS     # one target, e.g. federation_message 600
#   bash tests/fuzz/run.sh all SECONDS        # every target in turn (CI: 20 s each)
#
# The kept corpus, tests/fuzz/corpus/TARGET, is where each run starts; with YRD_FUZZ_KEEP=1
# the inputs that reached new code are merged into it (commit them). A crash is written to
# tests/fuzz/crashes/TARGET/ and the run fails: fix it, keep the file (the corpus replay test
# feeds it to the target in every test run), commit both. Limits per input: 10 s (a hang), 1 GiB of memory (an unbounded
# allocation), 64 KiB of input.
set -euo pipefail
cd "$(dirname "$0")/../.."
target=${1:?usage: tests/fuzz/run.sh TARGET|all SECONDS}
seconds=${2:?usage: tests/fuzz/run.sh TARGET|all SECONDS}

if ! command -v c++ >/dev/null; then
  echo "libFuzzer is C++: installing g++" >&2
  sudo=""; [ "$(id -u)" = 0 ] || sudo=sudo
  $sudo apt-get update -qq && $sudo apt-get install -y -qq g++ >/dev/null
fi

host=$(rustc -vV | sed -n 's/^host: //p')
# Sanitizer coverage without a sanitizer: stable flags only. Passing --target keeps them off
# build scripts and proc macros.
export RUSTFLAGS="--cfg fuzzing -Cpasses=sancov-module \
  -Cllvm-args=-sanitizer-coverage-level=4 \
  -Cllvm-args=-sanitizer-coverage-inline-8bit-counters \
  -Cllvm-args=-sanitizer-coverage-pc-table \
  -Cllvm-args=-sanitizer-coverage-trace-compares \
  -Cdebug-assertions -Coverflow-checks"
cargo build --release --manifest-path tests/fuzz/Cargo.toml \
  --target "$host" --target-dir target/fuzz
binary=target/fuzz/$host/release/yrd-fuzz

if [ "$target" = all ]; then
  # Every target has its corpus folder (the corpus replay test requires one).
  targets=$(ls tests/fuzz/corpus)
else
  targets=$target
fi
for t in $targets; do
  corpus=tests/fuzz/corpus/$t
  crashes=tests/fuzz/crashes/$t
  mkdir -p "$corpus" "$crashes"
  echo "fuzzing $t for ${seconds} s (corpus: $(ls "$corpus" | wc -l) inputs)"
  # New inputs go to a scratch folder; the kept corpus is only read, so a CI run leaves the
  # tree as it was. YRD_FUZZ_KEEP=1 merges what reached new code into the corpus.
  scratch=$(mktemp -d)
  log=$(mktemp)
  set +e
  YRD_FUZZ_TARGET=$t "$binary" "$scratch" "$corpus" \
    -max_total_time="$seconds" -timeout=10 -rss_limit_mb=1024 -max_len=65536 \
    -artifact_prefix="$crashes/" -print_final_stats=1 >"$log" 2>&1
  status=$?
  set -e
  grep -E '^(#[0-9]+.*(DONE|pulse)|Done [0-9]+ runs|stat::(number_of_executed_runs|new_units_added|peak_rss_mb)|SUMMARY|==[0-9]+==)' "$log" | tail -6
  if [ "$status" != 0 ]; then
    tail -40 "$log" >&2
  fi
  rm -f "$log"
  if [ "${YRD_FUZZ_KEEP:-}" = 1 ]; then
    YRD_FUZZ_TARGET=$t "$binary" -set_cover_merge=1 "$corpus" "$scratch" >/dev/null 2>&1
  fi
  rm -rf "$scratch"
  if [ "$status" != 0 ]; then
    echo "fuzzing $t failed (exit $status); the input is in $crashes/" >&2
    exit 1
  fi
done
