#!/usr/bin/env bash
# Provision the binaries of Weir's test control plane: etcd (Debian package) and
# kube-apiserver / kube-controller-manager / kube-scheduler 1.20.2 built from Debian's
# `kubernetes` source package. The built binaries are cached outside the checkout so a
# second run takes seconds. A cache entry counts only when its `.complete` stamp exists,
# which is written last, after every binary has been checked to run.
set -euo pipefail

K8S_VERSION=1.20.2
CACHE_ROOT="${WEIR_CACHE_DIR:-$HOME/.cache/weir}"
BIN_DIR="$CACHE_ROOT/k8s-$K8S_VERSION"
STAMP="$BIN_DIR/.complete"
BINARIES=(kube-apiserver kube-controller-manager kube-scheduler)

log() { printf '[provision] %s\n' "$*" >&2; }

need_apt=()
command -v etcd >/dev/null 2>&1 || need_apt+=(etcd-server)
command -v openssl >/dev/null 2>&1 || need_apt+=(openssl)

binaries_ok() {
  [[ -f "$STAMP" ]] || return 1
  for b in "${BINARIES[@]}"; do
    [[ -x "$BIN_DIR/$b" ]] || return 1
  done
  return 0
}

apt_updated=0
apt_install() {
  if [[ $apt_updated -eq 0 ]]; then
    log "apt-get update"
    apt-get update -qq
    apt_updated=1
  fi
  log "apt-get install $*"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

if [[ ${#need_apt[@]} -gt 0 ]]; then
  apt_install "${need_apt[@]}"
fi

if binaries_ok; then
  log "control plane binaries cached in $BIN_DIR"
  echo "$BIN_DIR"
  exit 0
fi

log "building kube-apiserver, kube-controller-manager, kube-scheduler $K8S_VERSION (about 5-10 minutes)"
build_pkgs=()
command -v go >/dev/null 2>&1 || build_pkgs+=(golang-go)
command -v rsync >/dev/null 2>&1 || build_pkgs+=(rsync)
command -v make >/dev/null 2>&1 || build_pkgs+=(make)
dpkg -s golang-github-modern-go-reflect2-dev >/dev/null 2>&1 || build_pkgs+=(golang-github-modern-go-reflect2-dev)
dpkg -s dpkg-dev >/dev/null 2>&1 || build_pkgs+=(dpkg-dev)

# apt-get source needs a deb-src entry for bookworm main.
SRC_LIST=/etc/apt/sources.list.d/weir-deb-src.sources
if ! grep -rqs '^Types:.*deb-src' /etc/apt/sources.list.d/ && ! grep -qs '^deb-src' /etc/apt/sources.list 2>/dev/null; then
  log "adding a deb-src entry for bookworm main"
  cat > "$SRC_LIST" <<'SRC'
Types: deb-src
URIs: http://deb.debian.org/debian
Suites: bookworm
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
  apt_updated=0
fi
if [[ ${#build_pkgs[@]} -gt 0 || $apt_updated -eq 0 ]]; then
  if [[ ${#build_pkgs[@]} -gt 0 ]]; then apt_install "${build_pkgs[@]}"; else apt-get update -qq; fi
fi

WORK="$CACHE_ROOT/build-$K8S_VERSION"
rm -rf "$WORK"
mkdir -p "$WORK"
cd "$WORK"
log "downloading Debian source package kubernetes"
apt-get source --download-only kubernetes >/dev/null 2>&1 || apt-get source --download-only kubernetes
ORIG=$(ls kubernetes_*.orig.tar.* | head -n1)
mkdir src
tar -xf "$ORIG" -C src --strip-components=1
cd src

# Go 1.19 crashes the 1.20 apiserver inside reflect2 1.0.1: use Debian's 1.0.2.
REFLECT2_SRC=$(dpkg -L golang-github-modern-go-reflect2-dev | grep -E '/github.com/modern-go/reflect2$' | head -n1)
if [[ -z "$REFLECT2_SRC" ]]; then
  log "cannot find reflect2 sources from golang-github-modern-go-reflect2-dev"; exit 1
fi
rm -rf vendor/github.com/modern-go/reflect2
mkdir -p vendor/github.com/modern-go/reflect2
cp -a "$REFLECT2_SRC"/. vendor/github.com/modern-go/reflect2/
find vendor/github.com/modern-go/reflect2 -name '*_test.go' -delete

mkdir -p .go/src/k8s.io
ln -sfn ../../.. .go/src/k8s.io/kubernetes
mkdir -p "$WORK/home"
log "go build (this is the slow part)"
GOPATH="$PWD/.go" CGO_ENABLED=0 HOME="$WORK/home" \
  make WHAT="cmd/kube-apiserver cmd/kube-controller-manager cmd/kube-scheduler" >"$WORK/build.log" 2>&1 || {
    log "build failed; last lines of $WORK/build.log:"; tail -n 40 "$WORK/build.log" >&2; exit 1; }

OUT=_output/local/bin/linux/amd64
TMP_BIN="$BIN_DIR.tmp"
rm -rf "$TMP_BIN"
mkdir -p "$TMP_BIN"
for b in "${BINARIES[@]}"; do
  cp "$OUT/$b" "$TMP_BIN/$b"
  "$TMP_BIN/$b" --version >/dev/null 2>&1 || { log "$b does not run"; exit 1; }
done
rm -rf "$BIN_DIR"
mv "$TMP_BIN" "$BIN_DIR"
date -u +%FT%TZ > "$STAMP"
cd /
rm -rf "$WORK"
log "control plane binaries ready in $BIN_DIR"
echo "$BIN_DIR"
