{{/*
The operator's pod template, shared by the Deployment (one shard: sharding.shards 1) and the
StatefulSet (several shards, each pod's shard taken from its ordinal).
*/}}
{{- define "weir.operatorPodTemplate" -}}
{{- $td := .Values.taskPodDefaults }}
{{- $podDefaults := dict }}
{{- with $td.serviceAccountName }}{{ $_ := set $podDefaults "serviceAccountName" . }}{{ end }}
{{- with $td.imagePullSecrets }}{{ $_ := set $podDefaults "imagePullSecrets" . }}{{ end }}
{{- with $td.securityContext }}{{ $_ := set $podDefaults "securityContext" . }}{{ end }}
{{- with $td.nodeSelector }}{{ $_ := set $podDefaults "nodeSelector" . }}{{ end }}
{{- with $td.tolerations }}{{ $_ := set $podDefaults "tolerations" . }}{{ end }}
{{- with $td.priorityClassName }}{{ $_ := set $podDefaults "priorityClassName" . }}{{ end }}
{{- with $td.labels }}{{ $_ := set $podDefaults "labels" . }}{{ end }}
{{- with $td.annotations }}{{ $_ := set $podDefaults "annotations" . }}{{ end -}}
metadata:
  labels:
    {{- include "weir.labels" . | nindent 4 }}
    {{- with .Values.podLabels }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  {{- with .Values.podAnnotations }}
  annotations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
spec:
  serviceAccountName: {{ include "weir.serviceAccountName" . }}
  # The operator talks to the API server with this service account's token.
  automountServiceAccountToken: true
  {{- with .Values.imagePullSecrets }}
  imagePullSecrets:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with .Values.priorityClassName }}
  priorityClassName: {{ . }}
  {{- end }}
  terminationGracePeriodSeconds: {{ .Values.terminationGracePeriodSeconds }}
  {{- with .Values.podSecurityContext }}
  securityContext:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  containers:
    - name: operator
      image: {{ include "weir.image" . | quote }}
      imagePullPolicy: {{ .Values.image.pullPolicy }}
      args:
        - operator
        - --http-addr={{ .Values.operator.httpAddress | default (printf "0.0.0.0:%d" (int .Values.metrics.port)) }}
        {{- if .Values.leaderElection.enabled }}
        - --leader-elect
        - --lease-name={{ include "weir.leaseName" . }}
        {{- end }}
        {{- with .Values.watchNamespaces }}
        - --namespaces={{ join "," . }}
        {{- end }}
        {{- if gt (int .Values.sharding.shards) 1 }}
        # This pod's shard is its StatefulSet ordinal modulo the shard count.
        - --shards={{ .Values.sharding.shards }}
        - --shard=pod-ordinal
        {{- end }}
        - --log-format={{ .Values.operator.logFormat }}
        - --log-level={{ .Values.operator.logLevel }}
        {{- if .Values.webhook.enabled }}
        {{- $service := include "weir.webhookService" . }}
        - --webhook-addr={{ .Values.webhook.address | default (printf "0.0.0.0:%d" (int .Values.webhook.port)) }}
        - --webhook-secret={{ include "weir.webhookSecret" . }}
        - --approval-key-secret={{ include "weir.approvalKeySecret" . }}
        {{- if .Values.webhook.certManager.enabled }}
        - --webhook-certs=external
        {{- else }}
        - --webhook-hosts={{ $service }}.{{ .Release.Namespace }}.svc,{{ $service }}.{{ .Release.Namespace }}.svc.cluster.local
        - --webhook-configuration={{ include "weir.clusterName" . }}
        - --approval-webhook-configuration={{ include "weir.clusterName" . }}-approvals
        - --webhook-cert-validity={{ .Values.webhook.certValidity }}
        {{- end }}
        {{- end }}
        {{- if .Values.httpTrigger.enabled }}
        - --trigger-addr=0.0.0.0:{{ .Values.httpTrigger.port }}
        {{- end }}
        {{- with .Values.artifacts }}
        {{- if .bucket }}
        - --artifact-bucket={{ .bucket }}
        {{- if and .provider (ne .provider "S3") }}
        - --artifact-provider={{ .provider }}
        {{- end }}
        {{- if .account }}
        - --artifact-account={{ .account }}
        {{- end }}
        {{- end }}
        {{- if .prefix }}
        - --artifact-prefix={{ .prefix }}
        {{- end }}
        {{- if .endpoint }}
        - --artifact-endpoint={{ .endpoint }}
        {{- end }}
        {{- if .region }}
        - --artifact-region={{ .region }}
        {{- end }}
        {{- if .credentialsSecret }}
        - --artifact-credentials-secret={{ .credentialsSecret }}
        {{- end }}
        {{- if .keepLogs }}
        - --artifact-keep-logs
        {{- end }}
        {{- if .keepAfterRunDeletion }}
        - --artifact-keep-after-run
        {{- end }}
        {{- end }}
        - --exec-image={{ .Values.artifacts.execImage | default (include "weir.image" .) }}
        {{- with .Values.operator.extraArgs }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
      env:
        # The Lease lives in the operator's own namespace; the pod name is its identity
        # in the Lease and in Events.
        - name: POD_NAMESPACE
          valueFrom:
            fieldRef:
              fieldPath: metadata.namespace
        - name: POD_NAME
          valueFrom:
            fieldRef:
              fieldPath: metadata.name
        {{- if $podDefaults }}
        - name: WEIR_TASK_POD_DEFAULTS
          value: {{ toJson $podDefaults | quote }}
        {{- end }}
        {{- with $td.containerSecurityContext }}
        - name: WEIR_TASK_CONTAINER_SECURITY_CONTEXT
          value: {{ toJson . | quote }}
        {{- end }}
        {{- with .Values.notifications.defaults }}
        - name: WEIR_NOTIFICATIONS
          value: {{ toJson . | quote }}
        {{- end }}
        {{- with .Values.notifications.uiUrl }}
        - name: WEIR_UI_URL
          value: {{ . | quote }}
        {{- end }}
        {{- with .Values.operator.extraEnv }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
      ports:
        - name: http
          containerPort: {{ .Values.metrics.port }}
          protocol: TCP
        {{- if .Values.webhook.enabled }}
        - name: webhook
          containerPort: {{ .Values.webhook.port }}
          protocol: TCP
        {{- end }}
        {{- if .Values.httpTrigger.enabled }}
        - name: trigger
          containerPort: {{ .Values.httpTrigger.port }}
          protocol: TCP
        {{- end }}
      # /livez: the process answers. /readyz: a leader whose watch caches synced, or a
      # standby taking part in the election.
      livenessProbe:
        httpGet:
          path: /livez
          port: http
        initialDelaySeconds: 5
        periodSeconds: 10
        failureThreshold: 3
      readinessProbe:
        httpGet:
          path: /readyz
          port: http
        periodSeconds: 5
        failureThreshold: 2
      {{- with .Values.securityContext }}
      securityContext:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with .Values.resources }}
      resources:
        {{- toYaml . | nindent 8 }}
      {{- end }}
  {{- with .Values.nodeSelector }}
  nodeSelector:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with .Values.tolerations }}
  tolerations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with .Values.affinity }}
  affinity:
    {{- toYaml . | nindent 4 }}
  {{- end }}
{{- end }}
