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
{{- if .Values.config.natsUrlSecret.name }}
  valueFrom:
    secretKeyRef:
      name: {{ .Values.config.natsUrlSecret.name }}
      key: {{ .Values.config.natsUrlSecret.key }}
{{- else }}
  value: {{ .Values.config.natsUrl | quote }}
{{- end }}
{{- include "lfx-v1-sync-helper.natsFileEnv" . }}
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
- name: SYNC_V2_TO_V1
  value: {{ .Values.config.syncV2ToV1 | quote }}
- name: V2_EVENTS_STREAM
  value: {{ .Values.nats.v2Events.stream | quote }}
- name: V2_EVENTS_CONSUMER_NAME
  value: {{ .Values.nats.v2Events.consumerName | quote }}
- name: CELERY_QUEUE
  value: {{ .Values.config.celeryQueue | quote }}
- name: DEBUG
  value: {{ .Values.config.debug | quote }}
{{- with .Values.extraEnv }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* Where the NATS credential and TLS files are mounted (one directory per Secret). */}}
{{- define "lfx-v1-sync-helper.natsFilesDir" -}}
/etc/v1-sync-helper/nats
{{- end }}

{{/* The NATS credential and TLS files of config.natsAuth and config.natsTls: (volume, Secret, key, file, env). */}}
{{- define "lfx-v1-sync-helper.natsFiles" -}}
{{- $files := list }}
{{- with .Values.config.natsAuth.credsSecret }}{{ if .name }}
{{- $files = append $files (dict "volume" "nats-creds" "secret" .name "key" .key "file" "nats.creds" "env" "NATS_CREDS") }}
{{- end }}{{ end }}
{{- with .Values.config.natsAuth.nkeySeedSecret }}{{ if .name }}
{{- $files = append $files (dict "volume" "nats-nkey" "secret" .name "key" .key "file" "nkey.seed" "env" "NATS_NKEY_SEED") }}
{{- end }}{{ end }}
{{- with .Values.config.natsTls.caSecret }}{{ if .name }}
{{- $files = append $files (dict "volume" "nats-tls-ca" "secret" .name "key" .key "file" "ca.crt" "env" "NATS_TLS_CA") }}
{{- end }}{{ end }}
{{- with .Values.config.natsTls.clientCertSecret }}{{ if .name }}
{{- $files = append $files (dict "volume" "nats-tls-client" "secret" .name "key" .certKey "file" "tls.crt" "env" "NATS_TLS_CERT") }}
{{- $files = append $files (dict "volume" "nats-tls-client" "secret" .name "key" .keyKey "file" "tls.key" "env" "NATS_TLS_KEY") }}
{{- end }}{{ end }}
{{- toJson $files }}
{{- end }}

{{/* NATS_CREDS, NATS_NKEY_SEED, NATS_TLS_*: the paths of the mounted files. */}}
{{- define "lfx-v1-sync-helper.natsFileEnv" -}}
{{- $dir := include "lfx-v1-sync-helper.natsFilesDir" . }}
{{- range (include "lfx-v1-sync-helper.natsFiles" . | fromJsonArray) }}
- name: {{ .env }}
  value: {{ printf "%s/%s/%s" $dir .volume .file | quote }}
{{- end }}
{{- end }}

{{/* The Secret volumes of the NATS files (read-only for the app group; items pick the keys). */}}
{{- define "lfx-v1-sync-helper.natsVolumes" -}}
{{- $byVolume := dict }}
{{- range (include "lfx-v1-sync-helper.natsFiles" . | fromJsonArray) }}
{{- $volume := get $byVolume .volume | default (dict "secret" .secret "items" list) }}
{{- $_ := set $volume "items" (append $volume.items (dict "key" .key "path" .file)) }}
{{- $_ := set $byVolume .volume $volume }}
{{- end }}
{{- range $name, $volume := $byVolume }}
- name: {{ $name }}
  secret:
    secretName: {{ $volume.secret }}
    defaultMode: 0440
    items:
      {{- toYaml $volume.items | nindent 6 }}
{{- end }}
{{- end }}

{{/* The mounts of natsVolumes. */}}
{{- define "lfx-v1-sync-helper.natsVolumeMounts" -}}
{{- $dir := include "lfx-v1-sync-helper.natsFilesDir" . }}
{{- $seen := dict }}
{{- range (include "lfx-v1-sync-helper.natsFiles" . | fromJsonArray) }}
{{- if not (hasKey $seen .volume) }}
{{- $_ := set $seen .volume true }}
- name: {{ .volume }}
  mountPath: {{ printf "%s/%s" $dir .volume }}
  readOnly: true
{{- end }}
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

{{/*
Scheduling knobs of one component's pods: (dict "root" $ "component" "bridge" "values" .Values.bridge).
A topology spread constraint without a labelSelector gets the component's selector labels, so the
common case (spread over zones or nodes) needs no label copied into the values.
*/}}
{{- define "lfx-v1-sync-helper.scheduling" -}}
{{- with .values.priorityClassName }}
priorityClassName: {{ . | quote }}
{{- end }}
{{- with .values.topologySpreadConstraints }}
topologySpreadConstraints:
{{- range . }}
{{- $constraint := . }}
{{- if not (hasKey . "labelSelector") }}
{{- $selector := include "lfx-v1-sync-helper.selectorLabels" (dict "root" $.root "component" $.component) | fromYaml }}
{{- $constraint = set (deepCopy .) "labelSelector" (dict "matchLabels" $selector) }}
{{- end }}
  - {{- toYaml $constraint | nindent 4 }}
{{- end }}
{{- end }}
{{- end }}


{{/*
Where KEDA finds the broker, as YAML (address, databaseIndex, enableTLS, sentinel): the
worker.keda.redis values, else what config.redisUrl says. KEDA's scaler takes host:port, never a
URL, and reads a password only from a Secret: the chart refuses what it cannot translate.
*/}}
{{- define "lfx-v1-sync-helper.kedaRedis" -}}
{{- $values := .Values.worker.keda.redis }}
{{- $sentinel := ne .Values.config.redisSentinelMaster "" }}
{{- $address := $values.address }}
{{- $database := "0" }}
{{- $tls := false }}
{{- if .Values.config.redisUrlSecret.name }}
{{- if not $address }}
{{- fail "worker.keda.redis.address is required when config.redisUrlSecret is set: KEDA cannot read the Redis URL from that Secret (give host:port, and the password in worker.keda.redis.passwordSecret)" }}
{{- end }}
{{- else }}
{{- $hosts := list }}
{{- range $i, $url := splitList ";" (replace "," ";" .Values.config.redisUrl) }}
{{- $parsed := urlParse $url }}
{{- if eq $parsed.scheme "unix" }}
{{- fail "worker.keda.redis.address is required when config.redisUrl is a unix socket: KEDA reaches Redis over TCP (host:port)" }}
{{- end }}
{{- if and $parsed.userinfo (contains ":" $parsed.userinfo) (not $values.passwordSecret.name) }}
{{- fail "config.redisUrl carries a password: set worker.keda.redis.passwordSecret, a Secret with it for KEDA's TriggerAuthentication" }}
{{- end }}
{{- $port := ternary "26379" "6379" $sentinel }}
{{- $hosts = append $hosts (ternary $parsed.host (printf "%s:%s" $parsed.host $port) (contains ":" $parsed.host)) }}
{{- if eq $i 0 }}
{{- $database = default "0" (trimPrefix "/" $parsed.path) }}
{{- $tls = eq $parsed.scheme "rediss" }}
{{- end }}
{{- end }}
{{- $address = default (join "," $hosts) $address }}
{{- end }}
{{- if ne (toString $values.databaseIndex) "" }}
{{- $database = toString $values.databaseIndex }}
{{- end }}
{{- if ne (toString $values.enableTLS) "" }}
{{- $tls = $values.enableTLS }}
{{- end }}
address: {{ $address | quote }}
databaseIndex: {{ $database | quote }}
enableTLS: {{ $tls | toString | quote }}
sentinel: {{ $sentinel }}
{{- end }}

{{/* The job label of the bridges' `up` series: the ServiceMonitor's default, the Service's name. */}}
{{- define "lfx-v1-sync-helper.bridgeJob" -}}
{{- printf "%s-bridge" (include "lfx-v1-sync-helper.fullname" .) }}
{{- end }}

{{/*
The Kubernetes name of a NACK resource for a JetStream name: JetStream allows `_` and
capitals (committee_events), a resource name is a lower-case DNS subdomain. The spec
carries the JetStream name itself.
*/}}
{{- define "lfx-v1-sync-helper.v2EventsResourceName" -}}
{{- . | lower | replace "_" "-" | trunc 253 | trimSuffix "-" }}
{{- end }}
