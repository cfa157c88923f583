#!/usr/bin/env bash
# Restart ONE component of a test environment started by hack/testenv/up.sh, keeping its
# data: what a crash and a restart by systemd (or a kubelet) look like. Used by the chaos
# suite (tests/chaos) and the soak (hack/soak.sh).
#
#   restart.sh [--signal SIG] [--down SECONDS] COMPONENT
#
# COMPONENT is one of etcd, kube-apiserver, kube-controller-manager, kube-scheduler,
# weir-node-agent. The component gets SIG (default KILL: no graceful shutdown), stays down
# for SECONDS (default 0, fractions allowed), and is started again with exactly the command
# line up.sh started it with (kept in pids/COMPONENT.cmd). Unlike up.sh, nothing is made
# fresh: etcd keeps its data dir, so every object survives. Returns once the component
# serves again (etcd and kube-apiserver: the apiserver's /readyz is ok; the controller-
# manager and scheduler: their /healthz; the node agent: its log server answers).
#
# Restarting the node agent kills the processes of the pods it was running (it does not
# re-attach to them); those pods are reported Failed with reason NodeAgentRestarted.
#
# It holds the state dir's lock from the kill to the end, so an up.sh run meanwhile (a test
# process starting) waits instead of finding the environment broken and starting it afresh.
#
# Environment: WEIR_ENV_DIR (default ~/.cache/weir/env), as for up.sh.
set -euo pipefail

usage() { echo "usage: $0 [--signal SIG] [--down SECONDS] etcd|kube-apiserver|kube-controller-manager|kube-scheduler|weir-node-agent" >&2; exit 2; }

SIGNAL=KILL
DOWN=0
while (($#)); do
  case $1 in
    --signal) SIGNAL=${2:?}; shift 2 ;;
    --down) DOWN=${2:?}; shift 2 ;;
    -h|--help) usage ;;
    -*) usage ;;
    *) break ;;
  esac
done
(($# == 1)) || usage
NAME=$1
case $NAME in
  etcd|kube-apiserver|kube-controller-manager|kube-scheduler|weir-node-agent) ;;
  *) usage ;;
esac

STATE=${WEIR_ENV_DIR:-$HOME/.cache/weir/env}
[[ -d $STATE ]] || { echo "[restart] no environment in $STATE" >&2; exit 1; }
STATE=$(cd "$STATE" && pwd)
PIDS=$STATE/pids
LOGS=$STATE/logs

T0=$(date +%s%N)
log() { local ms=$(( ($(date +%s%N) - T0) / 1000000 )); printf '[restart %d.%03ds] %s\n' $((ms / 1000)) $((ms % 1000)) "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

exec 9>"$STATE/.lock"
flock 9

[[ -f $PIDS/$NAME.cmd ]] || die "$PIDS/$NAME.cmd is missing: the environment was started by an older up.sh (run down.sh, then up.sh)"
mapfile -d '' -t CMD <"$PIDS/$NAME.cmd"
((${#CMD[@]} > 0)) || die "$PIDS/$NAME.cmd is empty"

flag() { # --name=value in the recorded command line -> value
  local a
  for a in "${CMD[@]}"; do
    if [[ $a == "$1="* ]]; then echo "${a#*=}"; return 0; fi
  done
  return 1
}

running() { # pid: alive, not a zombie (nothing may reap a detached daemon in a container)
  local stat
  stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
  stat=${stat##*) }
  [[ ${stat:0:1} != Z ]]
}

pid=""
[[ -f $PIDS/$NAME.pid ]] && pid=$(<"$PIDS/$NAME.pid")
if [[ -n $pid ]] && running "$pid" && grep -qF -- "$STATE/" "/proc/$pid/cmdline" 2>/dev/null; then
  kill -s "$SIGNAL" "$pid"
  for _ in $(seq 300); do running "$pid" || break; sleep 0.1; done
  running "$pid" && die "$NAME (pid $pid) still runs 30s after SIG$SIGNAL"
  log "$NAME (pid $pid) stopped by SIG$SIGNAL"
else
  log "$NAME was not running"
fi
rm -f "$PIDS/$NAME.pid"
[[ $DOWN == 0 ]] || sleep "$DOWN"

# Appended to the log, unlike up.sh: what happened before the crash stays readable.
printf '\n===== restarted by hack/testenv/restart.sh at %s after SIG%s =====\n' "$(date -u +%FT%TZ)" "$SIGNAL" >>"$LOGS/$NAME.log"
setsid nohup "${CMD[@]}" </dev/null >>"$LOGS/$NAME.log" 2>&1 9>&- &
echo $! >"$PIDS/$NAME.pid"
NEW=$!

# When it serves again.
KUBECONFIG_FILE=$STATE/kubeconfig
CA=$STATE/pki/apiserver/apiserver.crt
SERVER=$(sed -n 's/^ *server: //p' "$KUBECONFIG_FILE" | head -n1)
TOKEN=$(<"$STATE/pki/token")
apiserver_ready() {
  [[ $(curl -sf --max-time 2 -A weir-testenv-restart --cacert "$CA" -H "Authorization: Bearer $TOKEN" "$SERVER/readyz" 2>/dev/null) == ok ]]
}
serving() {
  running "$NEW" || die "$NAME exited after the restart; see $LOGS/$NAME.log"
  case $NAME in
    etcd|kube-apiserver) apiserver_ready ;;
    kube-controller-manager|kube-scheduler)
      [[ $(curl -sk --max-time 2 "https://127.0.0.1:$(flag --secure-port)/healthz" 2>/dev/null) == ok ]] ;;
    weir-node-agent)
      # Any HTTP answer (even 404) means the log server is up.
      curl -sk --max-time 2 -o /dev/null "https://127.0.0.1:$(flag --log-port)/" 2>/dev/null ;;
  esac
}
deadline=$(( $(date +%s) + 180 ))
until serving; do
  if (( $(date +%s) >= deadline )); then
    tail -n 20 "$LOGS/$NAME.log" >&2
    die "$NAME does not serve 180s after its restart"
  fi
  sleep 0.2
done
log "$NAME (pid $NEW) serves again"
