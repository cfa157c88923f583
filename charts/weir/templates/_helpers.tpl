{{/* Chart name, truncated to 63 characters (a label value). */}}
{{- define "weir.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Full name of the release's objects: the release name, unless it already contains the chart name. */}}
{{- define "weir.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/* Name of cluster-scoped objects: unique per release namespace too. */}}
{{- define "weir.clusterName" -}}
{{- printf "%s-%s" .Release.Namespace (include "weir.fullname" .) }}
{{- end }}

{{- define "weir.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "weir.selectorLabels" -}}
app.kubernetes.io/name: {{ include "weir.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "weir.labels" -}}
helm.sh/chart: {{ include "weir.chart" . }}
{{ include "weir.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/component: operator
app.kubernetes.io/part-of: weir
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "weir.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "weir.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "weir.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{- define "weir.leaseName" -}}
{{- default (include "weir.fullname" .) .Values.leaderElection.leaseName }}
{{- end }}

{{- define "weir.webhookService" -}}
{{- printf "%s-webhook" (include "weir.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "weir.webhookSecret" -}}
{{- default (printf "%s-webhook-tls" (include "weir.fullname" .)) .Values.webhook.secretName }}
{{- end }}

{{/* The values checked beyond the schema: namespaced mode needs namespaces; replicas of a shard need leader election. */}}
{{- define "weir.validate" -}}
{{- if and (eq .Values.rbac.scope "namespaced") (not .Values.watchNamespaces) }}
{{- fail "rbac.scope=namespaced needs watchNamespaces: the operator can only act in the namespaces it has Roles in" }}
{{- end }}
{{- if and (gt (int .Values.sharding.shards) 1) (gt (int .Values.sharding.replicasPerShard) 1) (not .Values.leaderElection.enabled) }}
{{- fail "sharding.replicasPerShard > 1 needs leaderElection.enabled: without it every replica of a shard would run its controllers" }}
{{- end }}
{{- end }}

{{/*
What the operator does with each resource, and nothing more (see src/controller/ and
src/leader.rs). Used as the rules of the ClusterRole (cluster scope) or of the Role in each
watched namespace (namespaced scope).
*/}}
{{- define "weir.rules" -}}
# Pipelines: watched and read (a PipelineRun snapshots the one it refers to); only their
# status is written, never their spec or metadata.
- apiGroups: [weir.dev]
  resources: [pipelines]
  verbs: [get, list, watch]
- apiGroups: [weir.dev]
  resources: [pipelines/status]
  verbs: [patch]
# PipelineRuns: watched; created by schedules and backfill, patched to cancel a replaced run,
# deleted by history limits.
- apiGroups: [weir.dev]
  resources: [pipelineruns]
  verbs: [get, list, watch, create, patch, delete]
# TaskRuns: created by their run, patched to cancel them.
- apiGroups: [weir.dev]
  resources: [taskruns]
  verbs: [get, list, watch, create, patch]
# Status is written with server-side apply (PATCH); a run's status is re-read before its
# pipeline snapshot is taken.
- apiGroups: [weir.dev]
  resources: [pipelineruns/status]
  verbs: [get, patch]
- apiGroups: [weir.dev]
  resources: [taskruns/status]
  verbs: [patch]
# Approvals: read and watched (a decision wakes the approval task it names); never written.
- apiGroups: [weir.dev]
  resources: [approvals]
  verbs: [get, list, watch]
# Pools: read and watched; their status (the slots held) is replaced under the
# resourceVersion read, so two writers can never both take the last slot.
- apiGroups: [weir.dev]
  resources: [pools]
  verbs: [get, list, watch]
- apiGroups: [weir.dev]
  resources: [pools/status]
  verbs: [update]
# PipelineRevisions: made when a run starts (or shared: a run adds itself to the owners of
# an existing one, under the resourceVersion read), and read by the runs that follow them.
# Never deleted by the operator: the garbage collector removes one with its last run.
- apiGroups: [weir.dev]
  resources: [pipelinerevisions]
  verbs: [get, create, patch]
# Assets: created on their first event (a task that produces one succeeded); read by the
# Pipelines that consume them and watched to wake those. Events are appended by replacing
# the status under the resourceVersion read (no event is lost, no sequence number reused);
# the consumers are patched in.
- apiGroups: [weir.dev]
  resources: [assets]
  verbs: [get, list, watch, create]
- apiGroups: [weir.dev]
  resources: [assets/status]
  verbs: [update, patch]
# Owner references with blockOwnerDeletion (TaskRun -> PipelineRun, Job -> TaskRun) need
# update on the owner's finalizers where OwnerReferencesPermissionEnforcement is on.
- apiGroups: [weir.dev]
  resources: [pipelineruns/finalizers, taskruns/finalizers]
  verbs: [update]
# One Job per attempt: created, watched (metadata only), deleted to stop an attempt.
- apiGroups: [batch]
  resources: [jobs]
  verbs: [get, list, watch, create, delete]
# Attempt pods are read for exit codes, reasons and termination messages (outputs).
- apiGroups: [""]
  resources: [pods]
  verbs: [get, list, watch]
# Events about Pipelines, runs and tasks (a repeated event is patched into a series).
- apiGroups: [events.k8s.io]
  resources: [events]
  verbs: [create, patch]
{{- if .Values.httpTrigger.enabled }}
# The HTTP trigger endpoint compares a caller's token with the Secret that a Pipeline's or
# Asset's spec.httpTrigger names. Only with httpTrigger.enabled.
- apiGroups: [""]
  resources: [secrets]
  verbs: [get]
{{- end }}
{{- range .Values.sensors.readableResources }}
# A `wait.object` sensor reads the object it waits for (values: sensors.readableResources).
- apiGroups: {{ toJson .apiGroups }}
  resources: {{ toJson .resources }}
  verbs: [get]
{{- end }}
# Notifications: the last log lines of a failed task go into its failure message.
- apiGroups: [""]
  resources: [pods/log]
  verbs: [get]
{{- with .Values.notifications.secretNames }}
# Notifications: the Secrets holding webhook addresses and credentials (`urlFrom`,
# `authorizationFrom`), by name only: the operator reads no other Secret.
- apiGroups: [""]
  resources: [secrets]
  resourceNames: {{ toJson . }}
  verbs: [get]
{{- end }}
{{- with .Values.artifacts.credentialsSecret }}
# The artifact store's credentials, read (this Secret only) to delete a deleted run's
# objects from the store.
- apiGroups: [""]
  resources: [secrets]
  resourceNames: [{{ . | quote }}]
  verbs: [get]
{{- end }}
{{- end }}

{{/* The UI's pods: a name of their own, so the operator's selectors never match them. */}}
{{- define "weir.ui.selectorLabels" -}}
app.kubernetes.io/name: {{ include "weir.name" . }}-ui
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "weir.ui.labels" -}}
helm.sh/chart: {{ include "weir.chart" . }}
{{ include "weir.ui.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/component: ui
app.kubernetes.io/part-of: weir
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/* The Secret holding the key Approvals are signed with (docs/approvals.md). */}}
{{- define "weir.approvalKeySecret" -}}
{{- printf "%s-approval-key" (include "weir.fullname" .) -}}
{{- end }}
