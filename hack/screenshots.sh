#!/usr/bin/env bash
# Screenshots of the UI for docs/screenshots/, taken in headless Chromium (Debian's chromium
# and chromium-driver, which hack/tools.sh installs) by the browser tests themselves, so that
# what the pictures show is what the tests checked.
#
#   hack/screenshots.sh            writes docs/screenshots/*.png
#
# Today: graph.png, the run graph of examples/ml-training.yaml (tests/browser.rs). The UI's
# other pages join here once they exist: a test that takes its screenshot into
# $WEIR_SCREENSHOT_DIR, and its name in TESTS below. Tests that need the control plane get it
# from WEIR_KUBECONFIG as usual (hack/testenv/up.sh).
#
# Environment: CARGO_TARGET_DIR as for the tests.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/weir/target}

# test binary : test name filter
TESTS=(
  "browser:graph_page_shows_states_and_searches_zooms_and_takes_focus"
)

if ! command -v chromium >/dev/null 2>&1 || ! command -v chromedriver >/dev/null 2>&1; then
  hack/tools.sh
fi

OUT=$ROOT/docs/screenshots
mkdir -p "$OUT"
export WEIR_SCREENSHOT_DIR=$OUT
for entry in "${TESTS[@]}"; do
  binary=${entry%%:*}
  name=${entry#*:}
  cargo test --quiet --test "$binary" -- --exact "$name" --test-threads 1
done
ls -l "$OUT"/*.png >&2
