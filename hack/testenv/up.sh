#!/usr/bin/env bash
# Start (or reuse, when already healthy) Weir's test environment: etcd, kube-apiserver,
# kube-controller-manager and kube-scheduler 1.20, plus weir-node-agent as the one node.
# Everything listens on 127.0.0.1 only. Prints the kubeconfig path on stdout; progress and
# errors go to stderr. The processes are detached (setsid), so a test run can leave them up
# for the next one; hack/testenv/down.sh stops them.
#
# Environment:
#   WEIR_ENV_DIR      state dir (pids, logs, certs, kubeconfig); default ~/.cache/weir/env
#   WEIR_NODE_AGENT   node agent binary to use instead of building it with cargo
#   CARGO_TARGET_DIR  where cargo builds the agent; default ~/.cache/weir/target
#   WEIR_ENV_PORT_OFFSET  added to every port below (default 0); an environment with another
#                     WEIR_ENV_DIR and offset runs beside the usual one (the chaos suite's
#                     does: restarting its apiserver or etcd harms no other test)
#   WEIR_OPERATOR_BINARY  what `$WEIR_ENV_DIR/bin/weir` links to when it does not exist yet
#                     (default $CARGO_TARGET_DIR/debug/weir): the program the agent runs for
#                     containers of the image `.../weir` that have no command (the Helm
#                     chart's operator pods); tests re-point the link at the binary they test
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
STATE=${WEIR_ENV_DIR:-$HOME/.cache/weir/env}
mkdir -p "$STATE"
STATE=$(cd "$STATE" && pwd)

# Fixed, uncommon loopback ports; WEIR_ENV_PORT_OFFSET shifts them all, so that a second
# environment (another WEIR_ENV_DIR) can run beside the usual one.
OFF=${WEIR_ENV_PORT_OFFSET:-0}
ETCD_CLIENT_PORT=$((23790 + OFF))
ETCD_PEER_PORT=$((23800 + OFF))
APISERVER_PORT=$((16443 + OFF))
CM_PORT=$((20257 + OFF))
SCHEDULER_PORT=$((20259 + OFF))
AGENT_PORT=$((20250 + OFF))
NODE_NAME=weir-node
# Pods that ask (annotation testenv.weir.dev/network: pod) get an address of their own in
# this range, on the bridge POD_NETWORK_NAME (also the prefix of their network namespaces):
# both derived from the offset, so that environments side by side never share them.
POD_NETWORK_NAME=wp$OFF
POD_CIDR=10.$((100 + (OFF / 1000) % 100)).$((OFF % 250)).0/24

PKI=$STATE/pki
PIDS=$STATE/pids
LOGS=$STATE/logs
KUBECONFIG_FILE=$STATE/kubeconfig
SERVER=https://127.0.0.1:$APISERVER_PORT
CA=$PKI/apiserver/apiserver.crt
COMPONENTS=(etcd kube-apiserver kube-controller-manager kube-scheduler weir-node-agent)

T0=$(date +%s%N)
log() { local ms=$(( ($(date +%s%N) - T0) / 1000000 )); printf '[up %d.%03ds] %s\n' $((ms / 1000)) $((ms % 1000)) "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# One up.sh or down.sh at a time per state dir (parallel test binaries all call up.sh).
exec 9>"$STATE/.lock"
flock 9

BIN_DIR=$("$ROOT/hack/testenv/provision.sh")

if [[ -n ${WEIR_NODE_AGENT:-} ]]; then
  AGENT=$WEIR_NODE_AGENT
else
  export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/weir/target}
  mkdir -p "$CARGO_TARGET_DIR"
  CARGO_TARGET_DIR=$(cd "$CARGO_TARGET_DIR" && pwd)
  log "cargo build -p weir-testenv --bin weir-node-agent"
  # When a test binary runs us, its environment has the variables cargo sets for running
  # tests (CARGO_MANIFEST_DIR, CARGO_PKG_*, ...). Some build scripts (ring's) rerun when
  # those change, so passing them on would rebuild ring, rustls and kube both here and in
  # the next `cargo test`. Build with the environment of a plain shell instead.
  scrub=()
  for v in $(compgen -e); do
    case $v in
      CARGO_MANIFEST_*|CARGO_PKG_*|CARGO_CRATE_NAME|CARGO_BIN_NAME|CARGO_BIN_EXE_*|CARGO_PRIMARY_PACKAGE|CARGO_TARGET_TMPDIR|OUT_DIR) scrub+=(-u "$v") ;;
    esac
  done
  (cd "$ROOT" && env "${scrub[@]}" cargo build --quiet -p weir-testenv --bin weir-node-agent) >&2 || die "building the node agent failed"
  AGENT=$CARGO_TARGET_DIR/debug/weir-node-agent
fi
[[ -x $AGENT ]] || die "node agent binary $AGENT is missing"

# The program standing in for the entrypoint of Weir's image, through a link that tests can
# re-point without restarting the agent.
mkdir -p "$STATE/bin"
if [[ ! -L $STATE/bin/weir && ! -e $STATE/bin/weir ]]; then
  ln -s "${WEIR_OPERATOR_BINARY:-${CARGO_TARGET_DIR:-$HOME/.cache/weir/target}/debug/weir}" "$STATE/bin/weir"
fi
AGENT_ARGS=(
  --kubeconfig="$KUBECONFIG_FILE"
  --node-name="$NODE_NAME"
  --state-dir="$STATE/agent"
  --address=127.0.0.1
  --log-port="$AGENT_PORT"
  --tls-cert="$PKI/agent.crt"
  --tls-key="$PKI/agent.key"
  --image-command=weir="$STATE/bin/weir"
  --pod-network="$POD_CIDR"
  --pod-network-name="$POD_NETWORK_NAME"
)
# A new binary or new flags restart the agent.
AGENT_ID="$(stat -L -c '%n %s %Y' "$AGENT") $(printf '%s\n' "${AGENT_ARGS[@]}" | sha256sum | cut -c1-16)"

pid_alive() { # name
  local f=$PIDS/$1.pid pid
  [[ -f $f ]] || return 1
  pid=$(<"$f")
  [[ -n $pid ]] && kill -0 "$pid" 2>/dev/null && grep -qF -- "$STATE" "/proc/$pid/cmdline" 2>/dev/null
}

TOKEN=""
[[ -f $PKI/token ]] && TOKEN=$(<"$PKI/token")
api() { # path -> body on stdout; fails unless HTTP 2xx
  # (Not curl's user agent: the apiserver pretty-prints JSON for curl, and the checks below
  # match on compact JSON.)
  curl -sf --max-time 3 -A weir-testenv-up --cacert "$CA" -H "Authorization: Bearer $TOKEN" "$SERVER$1"
}

node_ready() {
  local body
  body=$(api "/api/v1/nodes/$NODE_NAME") || return 1
  # Ready=True, and no taints: the TaintNodesByCondition admission plugin taints every new
  # Node not-ready, and the node lifecycle controller lifts that only once it saw it Ready.
  # (The apiserver writes compact JSON with a condition's type first and status second.)
  [[ $body == *'"type":"Ready","status":"True"'* && $body != *'"taints"'* ]]
}

default_sa_ready() {
  # The ServiceAccount admission plugin of 1.20 rejects pods until the SA has a token secret.
  local body
  body=$(api /api/v1/namespaces/default/serviceaccounts/default) || return 1
  [[ $body == *'"secrets"'* ]]
}

# The API server's flags changed since it started (a checkout with new flags below): start
# afresh rather than keep an environment that behaves differently.
apiserver_current() {
  grep -qzxF -- --enable-aggregator-routing=true "$PIDS/kube-apiserver.cmd" 2>/dev/null
}

healthy() {
  local c
  apiserver_current || return 1
  for c in "${COMPONENTS[@]}"; do pid_alive "$c" || return 1; done
  [[ $(api /readyz 2>/dev/null) == ok ]] || return 1
  node_ready
}

control_plane_healthy() {
  local c
  apiserver_current || return 1
  for c in etcd kube-apiserver kube-controller-manager kube-scheduler; do pid_alive "$c" || return 1; done
  [[ $(api /readyz 2>/dev/null) == ok ]]
}

# Starts a detached process: its own session (so it outlives this shell and the test
# process that ran us), no stdin, output to its log, and without our lock fd. Its command
# line is kept (NUL-separated) in pids/<name>.cmd, so that hack/testenv/restart.sh can
# start the same component again with the same flags and data.
launch() { # name binary args...
  local name=$1; shift
  : >"$LOGS/$name.log"
  printf '%s\0' "$@" >"$PIDS/$name.cmd"
  setsid nohup "$@" </dev/null >>"$LOGS/$name.log" 2>&1 9>&- &
  echo $! >"$PIDS/$name.pid"
}

stop_one() { # name
  local f=$PIDS/$1.pid pid i
  [[ -f $f ]] || return 0
  pid=$(<"$f")
  if [[ -n $pid ]] && kill -0 "$pid" 2>/dev/null && grep -qF -- "$STATE" "/proc/$pid/cmdline" 2>/dev/null; then
    kill -TERM "$pid" 2>/dev/null || true
    for i in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
  fi
  rm -f "$f"
}

start_agent() {
  log "starting weir-node-agent ($AGENT)"
  # For down.sh: the names of what the agent creates for pod networks.
  echo "$POD_NETWORK_NAME" >"$STATE/pod-network"
  launch weir-node-agent "$AGENT" "${AGENT_ARGS[@]}"
  echo "$AGENT_ID" >"$STATE/agent.id"
}

wait_for() { # description timeout-seconds command...
  local what=$1 timeout=$2; shift 2
  local deadline=$(( $(date +%s) + timeout ))
  until "$@"; do
    if (( $(date +%s) >= deadline )); then
      log "timed out after ${timeout}s waiting for $what"
      for c in "${COMPONENTS[@]}"; do
        [[ -f $LOGS/$c.log ]] && { echo "--- last lines of $LOGS/$c.log" >&2; tail -n 15 "$LOGS/$c.log" >&2; }
      done
      exit 1
    fi
    sleep 0.2
  done
}

wait_ready() {
  wait_for "node $NODE_NAME to be Ready and untainted" 60 node_ready
  wait_for "ServiceAccount default/default with its token" 60 default_sa_ready
}

if healthy; then
  if [[ $(cat "$STATE/agent.id" 2>/dev/null) != "$AGENT_ID" ]]; then
    # The agent binary was rebuilt since it started: restart just the agent.
    stop_one weir-node-agent
    start_agent
    wait_ready
  elif ! default_sa_ready; then
    wait_ready
  fi
  log "environment already up"
  echo "$KUBECONFIG_FILE"
  exit 0
fi

if control_plane_healthy && [[ -n $TOKEN ]]; then
  # Only the node agent is missing (crashed or killed).
  stop_one weir-node-agent
  start_agent
  wait_ready
  log "environment up (agent restarted)"
  echo "$KUBECONFIG_FILE"
  exit 0
fi

log "starting a fresh environment in $STATE"
WEIR_ENV_DIR=$STATE WEIR_ENV_LOCK_HELD=1 "$ROOT/hack/testenv/down.sh"
mkdir -p "$PKI/apiserver" "$PKI/controller-manager" "$PKI/scheduler" "$PIDS" "$LOGS" "$STATE/agent"

# Credentials are kept across restarts (the apiserver's self-signed serving cert too, it is
# generated into --cert-dir once); the etcd data is not.
if [[ ! -f $PKI/token ]]; then
  openssl rand -hex 24 >"$PKI/token"
fi
TOKEN=$(<"$PKI/token")
echo "$TOKEN,weir-admin,weir-admin,\"system:masters\"" >"$PKI/tokens.csv"
if [[ ! -f $PKI/sa.key ]]; then
  openssl genrsa -out "$PKI/sa.key" 2048 2>/dev/null
  openssl rsa -in "$PKI/sa.key" -pubout -out "$PKI/sa.pub" 2>/dev/null
fi
if [[ ! -f $PKI/agent.key ]]; then
  openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj "/CN=$NODE_NAME" \
    -addext "subjectAltName=IP:127.0.0.1,DNS:$NODE_NAME" \
    -keyout "$PKI/agent.key" -out "$PKI/agent.crt" 2>/dev/null
fi
chmod 600 "$PKI"/*.key "$PKI/token" "$PKI/tokens.csv"

cat >"$KUBECONFIG_FILE" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: weir-testenv
  cluster:
    server: $SERVER
    certificate-authority: $CA
users:
- name: weir-admin
  user:
    token: $TOKEN
contexts:
- name: weir-testenv
  context:
    cluster: weir-testenv
    user: weir-admin
    namespace: default
current-context: weir-testenv
EOF
chmod 600 "$KUBECONFIG_FILE"

rm -rf "$STATE/etcd"
log "starting etcd"
launch etcd etcd \
  --name=weir \
  --data-dir="$STATE/etcd" \
  --listen-client-urls=http://127.0.0.1:$ETCD_CLIENT_PORT \
  --advertise-client-urls=http://127.0.0.1:$ETCD_CLIENT_PORT \
  --listen-peer-urls=http://127.0.0.1:$ETCD_PEER_PORT \
  --initial-advertise-peer-urls=http://127.0.0.1:$ETCD_PEER_PORT \
  --initial-cluster=weir=http://127.0.0.1:$ETCD_PEER_PORT \
  --initial-cluster-state=new \
  --log-level=warn
wait_for "etcd" 30 curl -sf --max-time 1 -o /dev/null http://127.0.0.1:$ETCD_CLIENT_PORT/health

log "starting kube-apiserver"
# --advertise-address is the `kubernetes` Service endpoint only (a loopback address there is
# rejected); nothing ever connects to it. The apiserver reaches the node agent for logs at
# the Node's InternalIP, 127.0.0.1.
launch kube-apiserver "$BIN_DIR/kube-apiserver" \
  --etcd-servers=http://127.0.0.1:$ETCD_CLIENT_PORT \
  --bind-address=127.0.0.1 \
  --secure-port=$APISERVER_PORT \
  --insecure-port=0 \
  --advertise-address=10.0.0.1 \
  --cert-dir="$PKI/apiserver" \
  --token-auth-file="$PKI/tokens.csv" \
  --authorization-mode=RBAC \
  --service-account-key-file="$PKI/sa.pub" \
  --service-account-signing-key-file="$PKI/sa.key" \
  --service-account-issuer=https://kubernetes.default.svc \
  --service-cluster-ip-range=10.0.0.0/24 \
  --kubelet-preferred-address-types=InternalIP \
  --enable-aggregator-routing=true \
  --allow-privileged=true \
  --enable-priority-and-fairness=false \
  --profiling=false \
  --v=1
wait_for "the apiserver's serving certificate" 30 test -s "$CA"
wait_for "kube-apiserver /readyz" 60 bash -c "[[ \$(curl -sf --max-time 2 --cacert '$CA' -H 'Authorization: Bearer $TOKEN' $SERVER/readyz) == ok ]]"

log "starting kube-controller-manager, kube-scheduler"
launch kube-controller-manager "$BIN_DIR/kube-controller-manager" \
  --kubeconfig="$KUBECONFIG_FILE" \
  --authentication-kubeconfig="$KUBECONFIG_FILE" \
  --authorization-kubeconfig="$KUBECONFIG_FILE" \
  --bind-address=127.0.0.1 \
  --secure-port=$CM_PORT \
  --port=0 \
  --cert-dir="$PKI/controller-manager" \
  --leader-elect=false \
  --service-account-private-key-file="$PKI/sa.key" \
  --root-ca-file="$CA" \
  --use-service-account-credentials=false \
  --profiling=false \
  --v=1
launch kube-scheduler "$BIN_DIR/kube-scheduler" \
  --kubeconfig="$KUBECONFIG_FILE" \
  --authentication-kubeconfig="$KUBECONFIG_FILE" \
  --authorization-kubeconfig="$KUBECONFIG_FILE" \
  --bind-address=127.0.0.1 \
  --secure-port=$SCHEDULER_PORT \
  --port=0 \
  --cert-dir="$PKI/scheduler" \
  --leader-elect=false \
  --profiling=false \
  --v=1
start_agent
wait_ready
for c in "${COMPONENTS[@]}"; do pid_alive "$c" || die "$c exited; see $LOGS/$c.log"; done
log "environment up"
echo "$KUBECONFIG_FILE"
