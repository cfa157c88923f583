#!/usr/bin/env bash
# Coverage-guided fuzzing (libFuzzer, through cargo-fuzz) of the readers of user input: the
# targets in fuzz/fuzz_targets, each for a fixed time. A command to run by hand, not a step of
# CI: hack/test.sh runs the property-based targets of tests/fuzz instead, whose cases and
# seeds are fixed (see docs/contributing.md, "Fuzzing").
#
#   hack/fuzz.sh [SECONDS] [TARGET ...]     default: 60 seconds each, every target
#
# cargo-fuzz comes from crates.io, installed once into ~/.cache/weir/tools (WEIR_TOOLS_DIR
# overrides). It passes rustc flags that only nightly accepts; Weir's machines have only the
# stable toolchain, so RUSTC_BOOTSTRAP=1 lets stable take them. Each target keeps its corpus
# in ~/.cache/weir/fuzz-corpus/TARGET, seeded from examples/ and tests/fixtures/; a crash is
# written to fuzz/artifacts/TARGET/ and the script fails. Per input, libFuzzer stops on more
# than 1 GiB of memory or 10 s, and inputs are at most 64 KiB.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
SECONDS_EACH=${1:-60}
shift || true
TARGETS=("$@")
if [[ ${#TARGETS[@]} -eq 0 ]]; then
  TARGETS=(manifest template cron duration outputs)
fi

TOOLS=${WEIR_TOOLS_DIR:-$HOME/.cache/weir/tools}
CARGO_FUZZ_VERSION=0.13.2
if [[ ! -x $TOOLS/bin/cargo-fuzz || ! -f $TOOLS/.cargo-fuzz-$CARGO_FUZZ_VERSION ]]; then
  echo "[fuzz] cargo-fuzz $CARGO_FUZZ_VERSION from crates.io" >&2
  cargo install cargo-fuzz --locked --version "$CARGO_FUZZ_VERSION" --root "$TOOLS" >&2
  touch "$TOOLS/.cargo-fuzz-$CARGO_FUZZ_VERSION"
fi
export PATH=$TOOLS/bin:$PATH
export RUSTC_BOOTSTRAP=1
# Its own build directory: every crate is built with coverage instrumentation.
export CARGO_TARGET_DIR=${WEIR_FUZZ_TARGET_DIR:-$HOME/.cache/weir/target-libfuzzer}

CORPORA=${WEIR_FUZZ_CORPUS_DIR:-$HOME/.cache/weir/fuzz-corpus}
mkdir -p "$CORPORA/manifest"
cp -n examples/*.yaml tests/fixtures/invalid/*.yaml "$CORPORA/manifest/" 2>/dev/null || true

for target in "${TARGETS[@]}"; do
  mkdir -p "$CORPORA/$target"
  echo "[fuzz] $target for ${SECONDS_EACH}s" >&2
  cargo fuzz run --fuzz-dir fuzz --sanitizer none "$target" "$CORPORA/$target" -- \
    -max_total_time="$SECONDS_EACH" -rss_limit_mb=1024 -timeout=10 -max_len=65536 \
    -print_final_stats=1
done
