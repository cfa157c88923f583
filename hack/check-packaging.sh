#!/usr/bin/env bash
# Checks of what users install (hack/test.sh runs this; it needs hack/tools.sh first):
#   - `helm lint` of charts/weir, default and namespaced values;
#   - the chart rendered with several sets of values, and manifests/ (install.yaml and the
#     kustomize base), validate against the Kubernetes schemas of 1.25 and 1.30, strictly;
#   - values.schema.json rejects bad values at install time;
#   - the Argo CD health scripts give the expected health for their sample objects (Lua 5.4
#     and 5.1).
# (That the generated files are up to date is checked by hack/test.sh's `git diff` after
# hack/generate.sh.)
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
TOOLS=${WEIR_TOOLS_DIR:-$HOME/.cache/weir/tools}
HELM=$TOOLS/bin/helm
KUBECTL=$TOOLS/bin/kubectl-1.37
VALIDATE=$TOOLS/bin/kubernetes-validate
KUBE_VERSIONS=(1.25 1.30)
CHART=charts/weir
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
fail() { echo "check-packaging: $*" >&2; exit 1; }

# Value sets: name and helm flags.
declare -A VALUES=(
  [default]=""
  [namespaced]="--set rbac.scope=namespaced --set watchNamespaces={etl,ml} --set rbac.aggregateToDefaultRoles=false"
  [everything]="--set metrics.serviceMonitor.enabled=true --set metrics.serviceMonitor.labels.release=prom
    --set image.digest=sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef
    --set taskPodDefaults.serviceAccountName=pipelines --set taskPodDefaults.imagePullSecrets[0].name=registry
    --set taskPodDefaults.securityContext.runAsNonRoot=true --set taskPodDefaults.containerSecurityContext.allowPrivilegeEscalation=false
    --set imagePullSecrets[0].name=registry --set priorityClassName=system-cluster-critical
    --set nodeSelector.kubernetes\.io/os=linux --set tolerations[0].key=dedicated --set tolerations[0].operator=Exists
    --set replicaCount=3 --set leaderElection.leaseName=weir-lease --set operator.extraArgs[0]=--log-level=debug"
  [single]="--set replicaCount=1 --set leaderElection.enabled=false --set podDisruptionBudget.enabled=false --set metrics.service.enabled=false"
  [ui]="--set ui.enabled=true --set ui.namespace=etl --set ui.service.annotations.team=data"
  [uireadonly]="--set ui.enabled=true --set ui.auth=readonly --set ui.serviceAccount.create=false --set ui.serviceAccount.name=viewer"
)

echo "helm lint" >&2
"$HELM" lint --strict "$CHART" >/dev/null
# shellcheck disable=SC2086
"$HELM" lint --strict "$CHART" ${VALUES[namespaced]} >/dev/null

validate() { # file description
  local v out
  for v in "${KUBE_VERSIONS[@]}"; do
    # Unknown kinds (the ServiceMonitor) are warnings; anything else that does not validate fails.
    if ! out=$("$VALIDATE" --strict --quiet -k "$v" "$1" 2>&1); then
      echo "$out" >&2
      fail "$2 does not validate against Kubernetes $v"
    fi
    if grep -v 'monitoring.coreos.com' <<<"$out" | grep -q .; then
      echo "$out" >&2
      fail "$2: unexpected output from kubernetes-validate against Kubernetes $v"
    fi
  done
}

for name in "${!VALUES[@]}"; do
  echo "helm template ($name values) | kubernetes-validate --strict" >&2
  # shellcheck disable=SC2086
  "$HELM" template weir "$CHART" --namespace weir-system --include-crds ${VALUES[$name]} >"$work/$name.yaml"
  validate "$work/$name.yaml" "the chart with $name values"
done
grep -q 'namespace: ml' "$work/namespaced.yaml" || fail "namespaced mode renders no Role in namespace ml"
grep -q -- '--auth=token' "$work/ui.yaml" || fail "ui.enabled renders no UI Deployment in token mode"
if grep -q 'ui-read' "$work/ui.yaml"; then
  fail "the UI in token mode must have no RBAC of its own (every request is the user's)"
fi
grep -q 'ui-read' "$work/uireadonly.yaml" || fail "the readonly UI renders no read-only ClusterRole"
if grep -q -- '--auth' "$work/default.yaml"; then
  fail "the UI must be off by default"
fi
if grep -q 'kind: ClusterRole$' "$work/namespaced.yaml"; then
  fail "namespaced mode (without aggregateToDefaultRoles) must create nothing cluster-wide for the operator"
fi

echo "bad values are refused" >&2
refused() { # description, helm flags...
  local what=$1; shift
  if "$HELM" template weir "$CHART" "$@" >/dev/null 2>"$work/err"; then
    fail "the chart accepted $what"
  fi
}
refused "namespaced RBAC without namespaces" --set rbac.scope=namespaced
refused "an unknown RBAC scope" --set rbac.scope=global
refused "zero replicas" --set replicaCount=0
refused "a misspelt key" --set replicas=2
refused "an unknown log format" --set operator.logFormat=xml
refused "an invalid namespace name" --set 'watchNamespaces={Not_A_Namespace}'
refused "a port out of range" --set metrics.port=70000
refused "an unknown UI auth mode" --set ui.enabled=true --set ui.auth=local

echo "manifests/ | kubernetes-validate --strict" >&2
validate manifests/install.yaml manifests/install.yaml
"$KUBECTL" kustomize manifests/base >"$work/kustomized.yaml"
validate "$work/kustomized.yaml" "kubectl kustomize manifests/base"
if ! diff <(grep -cE '^kind:' manifests/install.yaml) <(grep -cE '^kind:' "$work/kustomized.yaml") >/dev/null; then
  fail "manifests/install.yaml and manifests/base hold different objects"
fi

echo "Argo CD health scripts" >&2
tests/argocd/run.sh
