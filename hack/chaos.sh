#!/usr/bin/env bash
# The chaos suite (tests/chaos, docs/reliability.md) on a control plane of its own, which it
# stops at the end, failed or not. hack/test.sh runs it as its own step; it takes three to five
# minutes. Prints each scenario's summary and then the totals:
#
#   chaos summary (5 scenarios, 156s): runs=28 faults=15 finished=28 same-outcome=28 duplicates=0 attempts-lost=0
#
# Usage: hack/chaos.sh [TEST FILTER]   (default `chaos::`: every scenario)
#
# Environment: CARGO_TARGET_DIR (default ~/.cache/weir/target); WEIR_CHAOS_ENV_DIR (default
# ~/.cache/weir/chaos-env) and WEIR_CHAOS_PORT_OFFSET (default 1000) place the environment;
# WEIR_CHAOS_SEED replays the operator-kill timings; WEIR_KEEP_ENV=1 leaves it running.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
FILTER=${1:-chaos::}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/weir/target}
export WEIR_CHAOS_ENV_DIR=${WEIR_CHAOS_ENV_DIR:-$HOME/.cache/weir/chaos-env}
export WEIR_CHAOS_PORT_OFFSET=${WEIR_CHAOS_PORT_OFFSET:-1000}
mkdir -p "$WEIR_CHAOS_ENV_DIR"

# One run per chaos environment at a time (two checkouts running hack/test.sh at once): a
# second one would kill the first one's apiserver. The lock is beside the state dir, and no
# process started below inherits it.
exec 8>"$WEIR_CHAOS_ENV_DIR.lock"
if ! flock -n 8; then
  echo "[chaos] another chaos run uses $WEIR_CHAOS_ENV_DIR; waiting for it" >&2
  flock 8
fi

summary=$(mktemp)
teardown() {
  if [[ ${WEIR_KEEP_ENV:-0} != 1 ]]; then
    WEIR_ENV_DIR=$WEIR_CHAOS_ENV_DIR hack/testenv/down.sh 8>&- || true
  fi
  rm -f "$summary"
}
trap teardown EXIT

set +e
WEIR_CHAOS_SUMMARY=$summary cargo test --test chaos --no-fail-fast -- --test-threads 1 --nocapture "$FILTER" 8>&-
status=$?
set -e

# The totals over the scenarios (the baseline is a fault-free measurement, not a scenario).
awk '$1 != "baseline" {
       n++
       for (i = 2; i <= NF; i++) { split($i, kv, "="); sum[kv[1]] += kv[2] }
     }
     END {
       printf "chaos summary (%d scenarios, %ds): runs=%d faults=%d finished=%d same-outcome=%d duplicates=%d attempts-lost=%d\n",
         n, sum["seconds"], sum["runs"], sum["faults"], sum["finished"], sum["same-outcome"], sum["duplicates"], sum["attempts-lost"]
     }' "$summary" >&2
exit $status
