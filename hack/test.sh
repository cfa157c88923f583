#!/usr/bin/env bash
# The whole test suite, from a fresh machine or a warm one: what the README tells you to run
# and what CI runs (.ci/run calls this script and nothing else).
#
#  1. provisions the test control plane (etcd from Debian; kube-apiserver,
#     kube-controller-manager and kube-scheduler 1.20 built from Debian's source package,
#     cached in ~/.cache/weir), and the tools the checks use;
#  2. checks formatting, clippy and that generated files (CRDs, manifests) are up to date;
#  3. fuzzes every reader of user input (a fixed number of cases, about 45 s of CPU);
#  4. starts the test environment (or reuses a running one) and runs every test:
#     engine unit and property tests, and integration tests against the real control plane;
#  5. runs the chaos suite (hack/chaos.sh) on a control plane of its own, which it kills
#     parts of and stops at the end.
#
# Environment: CARGO_TARGET_DIR (default ~/.cache/weir/target), WEIR_KEEP_ENV=1 to leave the
# environment running afterwards (it is stopped at the end if this script started it).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/weir/target}
export CARGO_TERM_COLOR=${CARGO_TERM_COLOR:-never}
step() { printf '\n==> %s\n' "$*" >&2; }

step "provisioning the test control plane and tools"
hack/testenv/provision.sh >/dev/null
if [[ -x hack/tools.sh ]]; then
  hack/tools.sh
fi

step "cargo fmt --check"
cargo fmt --all --check

step "cargo clippy --all-targets -- -D warnings"
cargo clippy --workspace --all-targets -- -D warnings

step "controller functions stay short (one named step each)"
hack/function-lengths.py --limit 80 src/controller

step "generated files are up to date"
hack/generate.sh
if ! git diff --exit-code --stat -- crds manifests charts contrib; then
  echo "generated files differ from what the code generates: run hack/generate.sh and commit" >&2
  exit 1
fi

step "Helm chart, plain manifests and Argo CD health scripts"
hack/check-packaging.sh

step "building"
cargo build --workspace --all-targets

step "fuzzing every reader of user input (fixed cases and seeds; docs/contributing.md#fuzzing)"
cargo test --test fuzz -- fuzz_ --nocapture --test-threads 2

step "starting the test environment"
started_here=0
ENV_DIR=${WEIR_ENV_DIR:-$HOME/.cache/weir/env}
if ! kubectl --kubeconfig "$ENV_DIR/kubeconfig" get --raw /readyz >/dev/null 2>&1; then
  started_here=1
fi
KUBECONFIG_PATH=$(hack/testenv/up.sh)
export WEIR_KUBECONFIG=$KUBECONFIG_PATH
export WEIR_ENV_DIR=$ENV_DIR
cleanup() {
  if [[ $started_here -eq 1 && ${WEIR_KEEP_ENV:-0} != 1 ]]; then
    hack/testenv/down.sh >/dev/null 2>&1 || true
  fi
}
trap cleanup EXIT

step "cargo test"
# Integration tests mostly wait on the control plane, so run more of them at once than cores.
# The fuzz targets (`fuzz_*`) ran in their own step above; the chaos scenarios and the soak
# (tests/chaos) are left to their own step and script: they must run one at a time, on their
# own control plane.
cargo test --workspace --no-fail-fast -- --test-threads "${WEIR_TEST_THREADS:-4}" \
  --skip fuzz_ --skip chaos:: --skip soak::

step "chaos suite (its own control plane, stopped at the end)"
hack/chaos.sh
