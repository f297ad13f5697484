#!/usr/bin/env bash
# Coverage-guided fuzzing (libFuzzer through cargo-fuzz) of the two parsers that take outside
# input: the NDJSON event parser (`events`) and the config loader (`config`). Time-bounded.
#
#   scripts/fuzz.sh                 # each target for FUZZ_SECONDS (default 60)
#   FUZZ_SECONDS=600 scripts/fuzz.sh events
#
# Needs cargo-fuzz (`cargo install cargo-fuzz --locked`, from crates.io). cargo-fuzz wants a
# nightly compiler for its flags; on the stable toolchain RUSTC_BOOTSTRAP=1 unlocks them, and
# the sanitizer is off (`-s none`: the parsers are safe Rust, so it is panics and failed
# assertions we look for). A crash leaves its input in fuzz/artifacts/TARGET/ and fails the
# script; `cargo fuzz run TARGET fuzz/artifacts/TARGET/crash-…` replays it.
set -euo pipefail
cd "$(dirname "$0")/../fuzz"

seconds="${FUZZ_SECONDS:-60}"
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(events config)

if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "cargo-fuzz is not installed: cargo install cargo-fuzz --locked" >&2
  exit 2
fi
export RUSTC_BOOTSTRAP=1
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"

status=0
for t in "${targets[@]}"; do
  mkdir -p "corpus/$t"
  cp -n seeds/"$t"/* "corpus/$t/" 2>/dev/null || true
  echo "== fuzz target $t for ${seconds}s"
  log="$(mktemp)"
  if cargo fuzz run -s none -O "$t" "corpus/$t" -- \
      -max_total_time="$seconds" -max_len=65536 -timeout=10 -rss_limit_mb=2048 \
      -print_final_stats=1 2>&1 | tee "$log" | grep -E '^(#[0-9]+ +(DONE|INITED)|stat::|==|INFO: Running|Done)' ; then
    :
  fi
  if grep -qE 'ERROR: libFuzzer|panicked|deadly signal|SUMMARY: libFuzzer' "$log"; then
    echo "!! $t: a crash; see fuzz/artifacts/$t/" >&2
    grep -E 'panicked|ERROR|artifact' "$log" >&2 || true
    status=1
  else
    runs="$(grep -oE 'stat::number_of_executed_units: *[0-9]+' "$log" | grep -oE '[0-9]+$' | tail -1)"
    cov="$(grep -oE 'cov: [0-9]+' "$log" | tail -1)"
    echo "== $t: ${runs:-?} inputs in ${seconds}s, ${cov:-cov: ?}, corpus $(ls "corpus/$t" | wc -l) files, no crash"
  fi
  rm -f "$log"
done
exit "$status"
