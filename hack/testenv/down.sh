#!/usr/bin/env bash
# Stop Weir's test environment started by hack/testenv/up.sh: the node agent (which kills
# its containers), the scheduler, the controller-manager, the apiserver and etcd. Then make
# sure nothing of this state dir is left: leftover daemons are found by their command lines
# (every one of them has a `--flag=<state dir>/...` argument) and leftover container
# processes by the marker variable the agent puts in their environment.
#
# Environment: WEIR_ENV_DIR (default ~/.cache/weir/env), as for up.sh.
set -euo pipefail

STATE=${WEIR_ENV_DIR:-$HOME/.cache/weir/env}
[[ -d $STATE ]] || exit 0
STATE=$(cd "$STATE" && pwd)
PIDS=$STATE/pids

log() { printf '[down] %s\n' "$*" >&2; }

if [[ -z ${WEIR_ENV_LOCK_HELD:-} ]]; then
  exec 9>"$STATE/.lock"
  flock 9
fi

ours() { # pid: true if it is alive and its command line names the state dir
  kill -0 "$1" 2>/dev/null && grep -qF -- "$STATE" "/proc/$1/cmdline" 2>/dev/null
}

# SIGTERM, then SIGKILL after a while. The control plane's state is thrown away on the next
# start anyway, so its graceful shutdown (the apiserver drains watches for many seconds) is
# not worth waiting for.
stop_pids() { # patience-in-tenths-of-a-second name=pid...
  local patience=$1 i entry alive; shift
  for entry in "$@"; do kill -TERM "${entry#*=}" 2>/dev/null || true; done
  for ((i = 0; i < patience; i++)); do
    alive=0
    for entry in "$@"; do kill -0 "${entry#*=}" 2>/dev/null && alive=1; done
    ((alive)) || return 0
    sleep 0.1
  done
  for entry in "$@"; do
    if kill -0 "${entry#*=}" 2>/dev/null; then
      log "${entry%%=*} (pid ${entry#*=}) still running after SIGTERM; killing it"
      kill -KILL "${entry#*=}" 2>/dev/null || true
    fi
  done
}

ours_by_name() { # name -> "name=pid" if its pid file names a live process of ours
  local f=$PIDS/$1.pid pid
  [[ -f $f ]] || return 0
  pid=$(<"$f")
  rm -f "$f"
  if [[ -n $pid ]] && ours "$pid"; then echo "$1=$pid"; fi
}

# The agent first, with time to kill its containers; then the rest together.
mapfile -t agent < <(ours_by_name weir-node-agent)
((${#agent[@]} == 0)) || stop_pids 50 "${agent[@]}"
mapfile -t rest < <(for n in kube-scheduler kube-controller-manager kube-apiserver etcd; do ours_by_name "$n"; done)
((${#rest[@]} == 0)) || stop_pids 20 "${rest[@]}"

# Anything still running with a `--<flag>=<state dir>/` argument (pid files lost, or a
# second copy): the pattern is anchored on that flag form so that a shell whose command
# line merely mentions the path is not hit.
pattern="--[a-z-]+=$(printf '%s' "$STATE" | sed 's/[][\.*^$+?(){}|]/\\&/g')/"
if pkill -TERM -f -- "$pattern" 2>/dev/null; then
  sleep 1
  pkill -KILL -f -- "$pattern" 2>/dev/null || true
fi

# Container processes whose agent died without killing them.
marker="WEIR_TESTENV_AGENT_STATE=$STATE/agent"
for env in $(grep -lzxF -- "$marker" /proc/[0-9]*/environ 2>/dev/null || true); do
  pid=${env#/proc/}; pid=${pid%/environ}
  [[ $pid == "$$" ]] || kill -KILL "$pid" 2>/dev/null || true
done

# Pod networks the agent left (it removes a pod's namespace when the pod ends; a killed
# agent cannot): the namespaces <name>-<n> and the bridge <name> (see up.sh).
if [[ -f $STATE/pod-network ]]; then
  net=$(<"$STATE/pod-network")
  if [[ $net =~ ^[A-Za-z0-9]{1,8}$ ]]; then
    for ns in $(ip netns list 2>/dev/null | awk '{print $1}'); do
      [[ $ns =~ ^$net-[0-9]+$ ]] && ip netns del "$ns" 2>/dev/null || true
    done
    ip link del "$net" 2>/dev/null || true
  fi
fi

log "stopped the environment in $STATE"
