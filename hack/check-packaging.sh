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
    --set replicaCount=3 --set leaderElection.leaseName=weir-lease --set operator.extraArgs[0]=--log-level=debug
    --set httpTrigger.enabled=true --set httpTrigger.service.annotations.team=data"
  [single]="--set replicaCount=1 --set leaderElection.enabled=false --set podDisruptionBudget.enabled=false --set metrics.service.enabled=false
    --set webhook.enabled=false"
  [certmanager]="--set webhook.certManager.enabled=true --set webhook.failurePolicy=Fail --set webhook.timeoutSeconds=10
    --set webhook.namespaceSelector.matchLabels.pipelines=enabled"
  [certmanager-issuer]="--set webhook.certManager.enabled=true --set webhook.certManager.issuerRef.name=corp-ca
    --set webhook.certManager.issuerRef.kind=ClusterIssuer --set rbac.scope=namespaced --set watchNamespaces={etl}"
  [sharded]="--set sharding.shards=3 --set sharding.replicasPerShard=2 --set leaderElection.leaseName=weir-lease"
  [ui]="--set ui.enabled=true --set ui.namespace=etl --set ui.service.annotations.team=data"
  [uireadonly]="--set ui.enabled=true --set ui.auth=readonly --set ui.serviceAccount.create=false --set ui.serviceAccount.name=viewer"
  [artifacts]="--set artifacts.bucket=weir-artifacts --set artifacts.prefix=weir --set artifacts.endpoint=http://minio.storage:9000
    --set artifacts.region=eu-west-1 --set artifacts.credentialsSecret=weir-s3 --set artifacts.keepLogs=true
    --set artifacts.keepAfterRunDeletion=true --set artifacts.execImage=registry.local/weir:1 --set rbac.scope=namespaced
    --set watchNamespaces={etl,ml}"
)

echo "helm lint" >&2
"$HELM" lint --strict "$CHART" >/dev/null
# shellcheck disable=SC2086
"$HELM" lint --strict "$CHART" ${VALUES[namespaced]} >/dev/null

validate() { # file description
  local v out
  for v in "${KUBE_VERSIONS[@]}"; do
    # Unknown kinds (the ServiceMonitor, cert-manager's Certificate and Issuer) are
    # warnings; anything else that does not validate fails.
    if ! out=$("$VALIDATE" --strict --quiet -k "$v" "$1" 2>&1); then
      echo "$out" >&2
      fail "$2 does not validate against Kubernetes $v"
    fi
    if grep -vE 'monitoring.coreos.com|cert-manager.io' <<<"$out" | grep -q .; then
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
# Namespaced mode: nothing cluster-wide for the operator but the one rule that lets it keep
# its own webhook configuration's caBundle current (that object is cluster-scoped).
cluster_roles=$(awk '/^kind: ClusterRole$/ {f = 1} f && /^  name:/ {print $2; f = 0}' "$work/namespaced.yaml")
if grep -v -- '-webhook$' <<<"$cluster_roles" | grep -q .; then
  fail "namespaced mode (without aggregateToDefaultRoles) must create nothing cluster-wide for the operator but the webhook's caBundle rule: $cluster_roles"
fi
grep -q 'resourceNames: \["weir-system-weir"\]' "$work/namespaced.yaml" ||
  fail "the webhook's ClusterRole must be limited to the chart's own webhook configuration"
grep -q 'cert-manager.io/inject-ca-from: weir-system/weir-webhook' "$work/certmanager.yaml" ||
  fail "with cert-manager the webhook configuration needs the cainjector annotation"
if grep -q 'validatingwebhookconfigurations' "$work/certmanager.yaml"; then
  fail "with cert-manager the operator needs no access to the webhook configuration"
fi
# Sharding: one StatefulSet of shards x replicasPerShard pods instead of the Deployment, each
# pod told to take its shard from its ordinal, and a Lease name per shard in the RBAC.
if grep -q 'kind: StatefulSet' "$work/default.yaml"; then
  fail "one shard (the default) must keep the Deployment"
fi
if grep -q 'kind: Deployment' "$work/sharded.yaml"; then
  fail "several shards must replace the Deployment with a StatefulSet"
fi
grep -q 'replicas: 6' "$work/sharded.yaml" || fail "3 shards x 2 replicas must make 6 pods"
grep -q 'podManagementPolicy: Parallel' "$work/sharded.yaml" || fail "shard pods must start in parallel"
grep -q -- '--shard=pod-ordinal' "$work/sharded.yaml" || fail "shard pods must take their shard from their ordinal"
for i in 0 1 2; do
  grep -q "\"weir-lease-shard-$i\"" "$work/sharded.yaml" || fail "no RBAC for the Lease of shard $i"
done
if grep -q 'kind: ValidatingWebhookConfiguration' "$work/single.yaml"; then
  fail "webhook.enabled=false still renders a webhook configuration"
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
refused "zero shards" --set sharding.shards=0
refused "zero replicas per shard" --set sharding.shards=2 --set sharding.replicasPerShard=0
refused "replicas of a shard without leader election" --set sharding.shards=2 --set leaderElection.enabled=false
refused "a misspelt key" --set replicas=2
refused "an unknown log format" --set operator.logFormat=xml
refused "an invalid namespace name" --set 'watchNamespaces={Not_A_Namespace}'
refused "a port out of range" --set metrics.port=70000
refused "an unknown UI auth mode" --set ui.enabled=true --set ui.auth=local
refused "an unknown failure policy" --set webhook.failurePolicy=Maybe
refused "a webhook timeout over 30 s" --set webhook.timeoutSeconds=60
refused "an issuer of an unknown kind" --set webhook.certManager.issuerRef.kind=Vault

echo "manifests/ | kubernetes-validate --strict" >&2
validate manifests/install.yaml manifests/install.yaml
"$KUBECTL" kustomize manifests/base >"$work/kustomized.yaml"
validate "$work/kustomized.yaml" "kubectl kustomize manifests/base"
if ! diff <(grep -cE '^kind:' manifests/install.yaml) <(grep -cE '^kind:' "$work/kustomized.yaml") >/dev/null; then
  fail "manifests/install.yaml and manifests/base hold different objects"
fi

echo "Argo CD health scripts" >&2
tests/argocd/run.sh
