#!/usr/bin/env bash
# Regenerates every generated file from the code: the CRDs in crds/ (and their copies in the
# Helm chart and plain manifests, once those exist). CI runs this and fails on any diff.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/weir/target}
cargo run --quiet --bin weir -- crd --output-dir crds
if [[ -x hack/generate-manifests.sh ]]; then
  hack/generate-manifests.sh
fi
