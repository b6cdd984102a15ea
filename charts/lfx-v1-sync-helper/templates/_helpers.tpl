{{/*
Names, labels and the pieces every workload shares.
*/}}

{{/* The chart name, or nameOverride. */}}
{{- define "lfx-v1-sync-helper.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The resource name prefix: fullnameOverride, or release-chart (once). */}}
{{- define "lfx-v1-sync-helper.fullname" -}}
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

{{/* chart-version, for the helm.sh/chart label. */}}
{{- define "lfx-v1-sync-helper.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels of every resource. */}}
{{- define "lfx-v1-sync-helper.labels" -}}
helm.sh/chart: {{ include "lfx-v1-sync-helper.chart" . }}
app.kubernetes.io/name: {{ include "lfx-v1-sync-helper.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: lfx-v1-sync-helper
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* Selector labels of one component: (dict "root" $ "component" "bridge"). */}}
{{- define "lfx-v1-sync-helper.selectorLabels" -}}
app.kubernetes.io/name: {{ include "lfx-v1-sync-helper.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{/* The service account name. */}}
{{- define "lfx-v1-sync-helper.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "lfx-v1-sync-helper.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* repository:tag, the tag defaulting to the chart's appVersion. */}}
{{- define "lfx-v1-sync-helper.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/* Environment every process reads (CommonSettings). */}}
{{- define "lfx-v1-sync-helper.commonEnv" -}}
- name: NATS_URL
  value: {{ .Values.config.natsUrl | quote }}
{{- if .Values.config.redisUrlSecret.name }}
- name: REDIS_URL
  valueFrom:
    secretKeyRef:
      name: {{ .Values.config.redisUrlSecret.name }}
      key: {{ .Values.config.redisUrlSecret.key }}
{{- else }}
- name: REDIS_URL
  value: {{ .Values.config.redisUrl | quote }}
{{- end }}
{{- if .Values.config.redisSentinelMaster }}
- name: REDIS_SENTINEL_MASTER
  value: {{ .Values.config.redisSentinelMaster | quote }}
{{- end }}
{{- if .Values.config.redisSentinelPasswordSecret.name }}
- name: REDIS_SENTINEL_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ .Values.config.redisSentinelPasswordSecret.name }}
      key: {{ .Values.config.redisSentinelPasswordSecret.key }}
{{- end }}
- name: V1_OBJECTS_BUCKET
  value: {{ .Values.nats.objectsBucket.name | quote }}
- name: V1_MAPPINGS_BUCKET
  value: {{ .Values.nats.mappingsBucket.name | quote }}
- name: SYNC_STATE_BUCKET
  value: {{ .Values.nats.stateBucket.name | quote }}
- name: SYNC_PARENT_WAIT
  value: {{ .Values.sync.parentWait | quote }}
- name: KV_CONSUMER_NAME
  value: {{ .Values.nats.kvConsumer.name | quote }}
- name: CELERY_QUEUE
  value: {{ .Values.config.celeryQueue | quote }}
- name: DEBUG
  value: {{ .Values.config.debug | quote }}
{{- with .Values.extraEnv }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* Pod-level settings shared by every workload. */}}
{{- define "lfx-v1-sync-helper.podCommon" -}}
serviceAccountName: {{ include "lfx-v1-sync-helper.serviceAccountName" . }}
automountServiceAccountToken: {{ .Values.serviceAccount.automountServiceAccountToken }}
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
securityContext:
  {{- toYaml .Values.podSecurityContext | nindent 2 }}
{{- end }}

{{/* The writable /tmp of every pod (the root filesystem is read-only). */}}
{{- define "lfx-v1-sync-helper.tmpVolume" -}}
- name: tmp
  emptyDir:
    sizeLimit: {{ .Values.tmpSizeLimit }}
{{- end }}

{{/* Labels of the Prometheus Operator objects: the chart's, the component's and monitoring.labels (the Prometheus selectors). */}}
{{- define "lfx-v1-sync-helper.monitoringLabels" -}}
{{ include "lfx-v1-sync-helper.labels" .root }}
app.kubernetes.io/component: {{ .component }}
{{- with .root.Values.monitoring.labels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* The scrape settings every monitor endpoint shares. */}}
{{- define "lfx-v1-sync-helper.scrapeSettings" -}}
path: /metrics
scheme: http
interval: {{ .Values.monitoring.interval }}
scrapeTimeout: {{ .Values.monitoring.scrapeTimeout }}
{{- end }}

{{/* The job label of the workers' `up` series: monitoring.prometheusRule.workerJob, else the PodMonitor's default (namespace/name). */}}
{{- define "lfx-v1-sync-helper.workerJob" -}}
{{- default (printf "%s/%s-worker" .Release.Namespace (include "lfx-v1-sync-helper.fullname" .)) .Values.monitoring.prometheusRule.workerJob }}
{{- end }}

{{/* The job label of the bridges' `up` series: the ServiceMonitor's default, the Service's name. */}}
{{- define "lfx-v1-sync-helper.bridgeJob" -}}
{{- printf "%s-bridge" (include "lfx-v1-sync-helper.fullname" .) }}
{{- end }}
