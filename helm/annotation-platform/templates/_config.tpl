{{/* Non-secret settings of every platform process (ANNOT_*): the ConfigMap's data, and inline env
     of the migration hook (which may run before the ConfigMap exists). */}}
{{- define "annot.configData" -}}
{{- $root := . -}}
ANNOT_ENV: {{ .Values.config.env | quote }}
ANNOT_HOST: "0.0.0.0"
ANNOT_VAR_DIR: /var/lib/annot
ANNOT_LOG_LEVEL: {{ .Values.config.logLevel | quote }}
ANNOT_LOG_JSON: {{ .Values.config.logJson | quote }}
ANNOT_GATEWAY_PORT: {{ .Values.gateway.port | quote }}
ANNOT_METRICS_PORT_BASE: {{ .Values.config.metricsPortBase | quote }}
ANNOT_GRPC_GRACE_S: {{ .Values.config.grpcGraceSeconds | quote }}
ANNOT_SERVICE_HOSTS: {{ include "annot.serviceHostsJson" . | quote }}
{{- range $name := splitList " " (include "annot.serviceNames" .) }}
ANNOT_{{ upper $name }}_PORT: {{ (index $root.Values.services $name).port | quote }}
{{- end }}
ANNOT_TRITON_GRPC_URL: {{ printf "%s:%d" (include "annot.tritonHost" .) (int .Values.triton.ports.grpc) | quote }}
ANNOT_TRITON_HTTP_PORT: {{ .Values.triton.ports.http | quote }}
ANNOT_TRITON_METRICS_PORT: {{ .Values.triton.ports.metrics | quote }}
{{- include "annot.foundation.config" . }}
HOME: /tmp
{{- range $k, $v := .Values.config.extraEnv }}
{{ $k }}: {{ $v | quote }}
{{- end }}
{{- end -}}
