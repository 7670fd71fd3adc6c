{{/* Names ---------------------------------------------------------------------------------- */}}
{{- define "annot.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "annot.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 40 | trimSuffix "-" -}}
{{- else if contains (include "annot.name" .) .Release.Name -}}
{{- .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name (include "annot.name" .) | trunc 40 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{/* The seven services, in SERVICES order (metrics port = base + 1 + index). */}}
{{- define "annot.serviceNames" -}}selection segmentation byproducts quality dialog video training{{- end -}}
{{/* The services whose worker is workers.yaml's: video's and training's long GPU jobs have video-worker.yaml
     and training-worker.yaml. Same order, so the metrics port base + 11 + index is the queue's (video's is
     base + 16, training's base + 17). */}}
{{- define "annot.workerNames" -}}selection segmentation byproducts quality dialog{{- end -}}
{{/* Service-to-service gRPC calls (caller: callees), made with the caller's own service key
     (services/common/keys.py SERVICE_GRANTS says which RPCs): its Secret entry, its env, the NetworkPolicies. */}}
{{- define "annot.serviceCalls" -}}dialog: [selection, segmentation]
gateway: [selection]{{- end -}}
{{- define "annot.serviceKeysSecret" -}}
{{- .Values.serviceKeys.existingSecret | default (printf "%s-service-keys" (include "annot.fullname" .)) -}}
{{- end -}}
{{/* A service key kept across upgrades: the Secret's value if it exists, else a new ak_<id>.<secret>. */}}
{{- define "annot.keepServiceKey" -}}
{{- $existing := lookup "v1" "Secret" .root.Release.Namespace .name -}}
{{- if and $existing (index $existing.data .key) -}}{{ index $existing.data .key | b64dec }}{{- else -}}
{{- printf "ak_%s.%s" (randAlphaNum 16) (randAlphaNum 43) -}}
{{- end -}}
{{- end -}}

{{- define "annot.commonLabels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: annotation-platform
{{- end -}}

{{- define "annot.labels" -}}
{{ include "annot.commonLabels" . }}
app.kubernetes.io/name: {{ include "annot.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{/* selectorLabels: call with (dict "root" $ "component" "server" "service" "selection") */}}
{{- define "annot.selectorLabels" -}}
app.kubernetes.io/name: {{ include "annot.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- if .service }}
annotation-platform/service: {{ .service }}
{{- end }}
{{- end -}}

{{- define "annot.componentLabels" -}}
{{ include "annot.commonLabels" .root }}
{{ include "annot.selectorLabels" . }}
{{- end -}}

{{/* Images ---------------------------------------------------------------------------------- */}}
{{- define "annot.image" -}}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) -}}
{{- end -}}

{{- define "annot.tritonImage" -}}
{{- printf "%s:%s" .Values.triton.image.repository (.Values.triton.image.tag | default .Chart.AppVersion) -}}
{{- end -}}

{{/* Addresses ------------------------------------------------------------------------------- */}}
{{- define "annot.serviceHost" -}}{{ include "annot.fullname" .root }}-{{ .service }}{{- end -}}

{{- define "annot.serviceHostsJson" -}}
{{- $root := . -}}
{{- $hosts := dict -}}
{{- range $name := splitList " " (include "annot.serviceNames" .) -}}
{{- $cfg := index $root.Values.services $name -}}
{{- $_ := set $hosts $name (printf "%s-%s:%d" (include "annot.fullname" $root) $name (int $cfg.port)) -}}
{{- end -}}
{{- toJson $hosts -}}
{{- end -}}

{{- define "annot.tritonHost" -}}{{ include "annot.fullname" . }}-triton{{- end -}}

{{- define "annot.redisHost" -}}
{{- if .Values.redis.enabled -}}{{ include "annot.fullname" . }}-redis{{- else -}}{{ required "externalRedis.host is required when redis.enabled=false" .Values.externalRedis.host }}{{- end -}}
{{- end -}}
{{- define "annot.redisPort" -}}
{{- if .Values.redis.enabled -}}6379{{- else -}}{{ .Values.externalRedis.port }}{{- end -}}
{{- end -}}

{{/* Secret holding the Redis password ("" = no auth) and its key. */}}
{{- define "annot.redisSecretName" -}}
{{- if .Values.redis.enabled -}}
{{- if .Values.redis.auth.enabled -}}{{ .Values.redis.auth.existingSecret | default (printf "%s-redis" (include "annot.fullname" .)) }}{{- end -}}
{{- else -}}{{ .Values.externalRedis.existingSecret }}{{- end -}}
{{- end -}}
{{- define "annot.redisSecretKey" -}}
{{- if .Values.redis.enabled -}}{{ .Values.redis.auth.existingSecretPasswordKey }}{{- else -}}{{ .Values.externalRedis.existingSecretPasswordKey }}{{- end -}}
{{- end -}}

{{- define "annot.postgresHost" -}}
{{- if .Values.postgresql.enabled -}}{{ include "annot.fullname" . }}-postgresql{{- else -}}{{ required "externalDatabase.host is required when postgresql.enabled=false" .Values.externalDatabase.host }}{{- end -}}
{{- end -}}
{{- define "annot.postgresPort" -}}
{{- if .Values.postgresql.enabled -}}5432{{- else -}}{{ .Values.externalDatabase.port }}{{- end -}}
{{- end -}}
{{- define "annot.dbSecretName" -}}
{{- if .Values.postgresql.enabled -}}{{ .Values.postgresql.auth.existingSecret | default (printf "%s-postgresql" (include "annot.fullname" .)) }}
{{- else -}}{{ required "externalDatabase.existingSecret is required when postgresql.enabled=false (the migration hook runs before chart Secrets exist)" .Values.externalDatabase.existingSecret }}{{- end -}}
{{- end -}}
{{- define "annot.dbSecretKey" -}}
{{- if .Values.postgresql.enabled -}}{{ .Values.postgresql.auth.existingSecretPasswordKey }}{{- else -}}{{ .Values.externalDatabase.existingSecretPasswordKey }}{{- end -}}
{{- end -}}
{{- define "annot.dbUser" -}}{{ if .Values.postgresql.enabled }}{{ .Values.postgresql.auth.username }}{{ else }}{{ .Values.externalDatabase.user }}{{ end }}{{- end -}}
{{- define "annot.dbName" -}}{{ if .Values.postgresql.enabled }}{{ .Values.postgresql.auth.database }}{{ else }}{{ .Values.externalDatabase.database }}{{ end }}{{- end -}}

{{/* Environment of every platform container: the non-secret part comes from the ConfigMap,
     passwords from Secrets, and the URLs are assembled by the kubelet ($(VAR) expansion). */}}
{{- define "annot.env" -}}
- name: POD_NAME
  valueFrom: {fieldRef: {fieldPath: metadata.name}}
{{ include "annot.redisEnv" . }}
{{ include "annot.dbEnv" . }}
{{- end -}}

{{- define "annot.redisEnv" -}}
{{- $redisSecret := include "annot.redisSecretName" . }}
{{- if and (not .Values.redis.enabled) .Values.externalRedis.existingSecretUrlKey }}
- name: ANNOT_REDIS_URL
  valueFrom: {secretKeyRef: {name: {{ .Values.externalRedis.existingSecret | quote }}, key: {{ .Values.externalRedis.existingSecretUrlKey | quote }}}}
{{- else if $redisSecret }}
- name: REDIS_PASSWORD
  valueFrom: {secretKeyRef: {name: {{ $redisSecret | quote }}, key: {{ include "annot.redisSecretKey" . | quote }}}}
- name: ANNOT_REDIS_URL
  value: {{ printf "%s://:$(REDIS_PASSWORD)@%s:%s/%d" (ternary "rediss" "redis" (and (not .Values.redis.enabled) .Values.externalRedis.tls)) (include "annot.redisHost" .) (include "annot.redisPort" .) (int .Values.config.redisDb) | quote }}
{{- else }}
- name: ANNOT_REDIS_URL
  value: {{ printf "%s://%s:%s/%d" (ternary "rediss" "redis" (and (not .Values.redis.enabled) .Values.externalRedis.tls)) (include "annot.redisHost" .) (include "annot.redisPort" .) (int .Values.config.redisDb) | quote }}
{{- end }}
{{- end -}}

{{- define "annot.dbEnv" -}}
{{- if and (not .Values.postgresql.enabled) .Values.externalDatabase.existingSecretUrlKey }}
- name: ANNOT_DATABASE_URL
  valueFrom: {secretKeyRef: {name: {{ include "annot.dbSecretName" . | quote }}, key: {{ .Values.externalDatabase.existingSecretUrlKey | quote }}}}
{{- else }}
- name: DB_PASSWORD
  valueFrom: {secretKeyRef: {name: {{ include "annot.dbSecretName" . | quote }}, key: {{ include "annot.dbSecretKey" . | quote }}}}
- name: ANNOT_DATABASE_URL
  value: {{ printf "postgresql+psycopg://%s:$(DB_PASSWORD)@%s:%s/%s%s" (include "annot.dbUser" .) (include "annot.postgresHost" .) (include "annot.postgresPort" .) (include "annot.dbName" .) (ternary (printf "?sslmode=%s" .Values.externalDatabase.sslmode) "" (and (not .Values.postgresql.enabled) (ne .Values.externalDatabase.sslmode ""))) | quote }}
{{- end }}
{{- end -}}

{{- define "annot.envFrom" -}}
- configMapRef:
    name: {{ include "annot.fullname" . }}-config
{{- end -}}

{{/* Writable scratch for read-only root filesystems. */}}
{{- define "annot.scratchVolumes" -}}
- name: tmp
  emptyDir: {sizeLimit: {{ .Values.scratch.tmpSizeLimit }}}
- name: var
  emptyDir: {sizeLimit: {{ .Values.scratch.varSizeLimit }}}
{{- end -}}
{{- define "annot.scratchMounts" -}}
- {name: tmp, mountPath: /tmp}
- {name: var, mountPath: /var/lib/annot}
{{- end -}}

{{/* The shared video volume, at ANNOT_VAR_DIR/videos (services/common/video_layout.py VIDEO_ROOT):
     the gateway writes uploads there, the video server and the video worker read them. */}}
{{- define "annot.videosClaim" -}}
{{- .Values.videos.persistence.existingClaim | default (printf "%s-videos" (include "annot.fullname" .)) -}}
{{- end -}}
{{- define "annot.videosVolume" -}}
- name: videos
  persistentVolumeClaim: {claimName: {{ include "annot.videosClaim" . }}}
{{- end -}}
{{- define "annot.videosMount" -}}
- {name: videos, mountPath: /var/lib/annot/videos}
{{- end -}}

{{/* The shared volume of promoted model versions, at ANNOT_VAR_DIR/triton/published
     (Settings.resolved_model_repository): the training server and worker write, Triton reads. */}}
{{- define "annot.publishedModelsClaim" -}}
{{- .Values.publishedModels.persistence.existingClaim | default (printf "%s-published-models" (include "annot.fullname" .)) -}}
{{- end -}}
{{- define "annot.publishedModelsVolume" -}}
- name: published-models
  persistentVolumeClaim: {claimName: {{ include "annot.publishedModelsClaim" . }}}
{{- end -}}
{{- define "annot.publishedModelsMount" -}}
- {name: published-models, mountPath: /var/lib/annot/triton/published}
{{- end -}}

{{- define "annot.podSecurityContext" -}}
{{ toYaml .Values.podSecurityContext }}
{{- end -}}
{{- define "annot.containerSecurityContext" -}}
{{ toYaml .Values.containerSecurityContext }}
{{- end -}}

{{- define "annot.imagePullSecrets" -}}
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* A password kept across upgrades: the value given, else the one already stored, else random. */}}
{{- define "annot.keepPassword" -}}
{{- $given := .given -}}
{{- if $given -}}{{ $given }}{{- else -}}
{{- $existing := lookup "v1" "Secret" .root.Release.Namespace .name -}}
{{- if and $existing (index $existing.data .key) -}}{{ index $existing.data .key | b64dec }}{{- else -}}{{ randAlphaNum 32 }}{{- end -}}
{{- end -}}
{{- end -}}

{{/* NetworkPolicy peers ----------------------------------------------------------------------- */}}
{{- define "annot.peer" -}}
- podSelector:
    matchLabels:
      {{- include "annot.selectorLabels" . | nindent 6 }}
{{- end -}}

{{- define "annot.prometheusPeer" -}}
- namespaceSelector:
    {{- toYaml .Values.networkPolicy.prometheus.namespaceSelector | nindent 4 }}
  podSelector:
    {{- toYaml .Values.networkPolicy.prometheus.podSelector | nindent 4 }}
{{- end -}}

{{/* Egress rules to Redis / PostgreSQL, in-cluster or external. */}}
{{- define "annot.egressRedis" -}}
- ports: [{port: {{ include "annot.redisPort" . }}, protocol: TCP}]
{{- if .Values.redis.enabled }}
  to:
    {{- include "annot.peer" (dict "root" . "component" "redis") | nindent 4 }}
{{- else if .Values.externalRedis.networkPolicyCidrs }}
  to:
    {{- range .Values.externalRedis.networkPolicyCidrs }}
    - ipBlock: {cidr: {{ . }}}
    {{- end }}
{{- end }}
{{- end -}}
{{- define "annot.egressPostgres" -}}
- ports: [{port: {{ include "annot.postgresPort" . }}, protocol: TCP}]
{{- if .Values.postgresql.enabled }}
  to:
    {{- include "annot.peer" (dict "root" . "component" "postgresql") | nindent 4 }}
{{- else if .Values.externalDatabase.networkPolicyCidrs }}
  to:
    {{- range .Values.externalDatabase.networkPolicyCidrs }}
    - ipBlock: {cidr: {{ . }}}
    {{- end }}
{{- end }}
{{- end -}}
{{- define "annot.egressTriton" -}}
- ports:
    - {port: {{ .Values.triton.ports.grpc }}, protocol: TCP}
    - {port: {{ .Values.triton.ports.http }}, protocol: TCP}
  to:
    {{- include "annot.peer" (dict "root" . "component" "triton") | nindent 4 }}
{{- end -}}

{{/* Merged settings of one service: .Values.server/.worker defaults overlaid by services.<name>. */}}
{{- define "annot.serverValues" -}}
{{- $cfg := index .root.Values.services .service -}}
{{- toYaml (mergeOverwrite (deepCopy .root.Values.server) (deepCopy ($cfg.server | default dict))) -}}
{{- end -}}
{{- define "annot.workerValues" -}}
{{- $cfg := index .root.Values.services .service -}}
{{- toYaml (mergeOverwrite (deepCopy .root.Values.worker) (deepCopy ($cfg.worker | default dict))) -}}
{{- end -}}
