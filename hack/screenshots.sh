#!/usr/bin/env bash
# Screenshots of the UI for docs/screenshots/, taken in headless Chromium (Debian's chromium
# and chromium-driver, which hack/tools.sh installs) by the browser tests themselves, so that
# what the pictures show is what the tests checked.
#
#   hack/screenshots.sh            writes docs/screenshots/*.png
#
# graph.png: the graph of examples/ml-training.yaml alone (tests/browser.rs, no cluster).
# pipelines.png, grid.png, run.png (run detail with its Gantt chart), run-graph.png and
# task.png (a failed task with its log): the real UI against the test control plane with
# the operator running (tests/ui_browser.rs), which the test starts as every operator test
# does (WEIR_KUBECONFIG / WEIR_ENV_DIR, see hack/testenv/up.sh). A new picture: a test that
# takes it into $WEIR_SCREENSHOT_DIR, and its name in TESTS below.
#
# Environment: CARGO_TARGET_DIR as for the tests.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/weir/target}

# test binary : test name filter
TESTS=(
  "browser:graph_page_shows_states_and_searches_zooms_and_takes_focus"
  "ui_browser:a_run_is_triggered_watched_live_read_and_rerun_from_the_pages"
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
