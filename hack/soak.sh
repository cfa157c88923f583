#!/usr/bin/env bash
# The soak (docs/reliability.md): Weir's workload pipelines on a 30-second schedule, two
# operator replicas, and a random fault every 20-60 s (the leader SIGKILLed; kube-apiserver,
# etcd, kube-controller-manager, kube-scheduler or the node agent SIGKILLed and restarted
# with its data) for as long as asked, on a control plane of its own that is stopped at the
# end. Not part of CI. Prints progress every 5 minutes and, at the end:
#
#   chaos summary [soak]: runs=... faults=... finished=... same-outcome=... duplicates=0 attempts-lost=0
#
# Usage: hack/soak.sh [--minutes N]   (default 60)
#
# Environment: CARGO_TARGET_DIR (default ~/.cache/weir/target); WEIR_CHAOS_ENV_DIR (default
# ~/.cache/weir/soak-env) and WEIR_CHAOS_PORT_OFFSET (default 2000), so that a soak and the
# chaos suite can run at the same time; WEIR_CHAOS_SEED replays a fault sequence;
# WEIR_KEEP_ENV=1 leaves the environment running.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
MINUTES=60
while (($#)); do
  case $1 in
    --minutes) MINUTES=${2:?}; shift 2 ;;
    *) echo "usage: $0 [--minutes N]" >&2; exit 2 ;;
  esac
done
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/weir/target}
export WEIR_CHAOS_ENV_DIR=${WEIR_CHAOS_ENV_DIR:-$HOME/.cache/weir/soak-env}
export WEIR_CHAOS_PORT_OFFSET=${WEIR_CHAOS_PORT_OFFSET:-2000}
mkdir -p "$WEIR_CHAOS_ENV_DIR"

exec 8>"$WEIR_CHAOS_ENV_DIR.lock"
flock -n 8 || { echo "[soak] another soak uses $WEIR_CHAOS_ENV_DIR" >&2; exit 1; }
teardown() {
  if [[ ${WEIR_KEEP_ENV:-0} != 1 ]]; then
    WEIR_ENV_DIR=$WEIR_CHAOS_ENV_DIR hack/testenv/down.sh 8>&- || true
  fi
}
trap teardown EXIT

echo "[soak] $MINUTES minutes on $WEIR_CHAOS_ENV_DIR (ports +$WEIR_CHAOS_PORT_OFFSET), started $(date -u +%FT%TZ)" >&2
WEIR_SOAK_MINUTES=$MINUTES cargo test --test chaos -- --test-threads 1 --nocapture soak:: 8>&-
