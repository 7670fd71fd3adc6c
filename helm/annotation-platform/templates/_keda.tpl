{{- /*
A KEDA ScaledObject that scales the Celery worker Deployment "<fullname>-<name>-worker" on the length of
its queue, the Redis list named after the service. Args: root, name, keda (the worker's keda values), sel.
*/ -}}
{{- define "annot.kedaScaledObject" -}}
{{- $root := .root -}}
{{- $keda := .keda -}}
apiVersion: keda.sh/v1alpha1
kind: ScaledObject
metadata:
  name: {{ include "annot.fullname" $root }}-{{ .name }}-worker
  labels:
    {{- include "annot.componentLabels" .sel | nindent 4 }}
spec:
  scaleTargetRef:
    name: {{ include "annot.fullname" $root }}-{{ .name }}-worker
  minReplicaCount: {{ $keda.minReplicaCount }}
  maxReplicaCount: {{ $keda.maxReplicaCount }}
  pollingInterval: {{ $keda.pollingInterval }}
  cooldownPeriod: {{ $keda.cooldownPeriod }}
  advanced:
    horizontalPodAutoscalerConfig:
      behavior:
        scaleDown:
          stabilizationWindowSeconds: {{ $keda.scaleDownStabilizationWindowSeconds }}
          policies:
            - {type: Pods, value: 1, periodSeconds: 60}
  triggers:
    - type: redis
      metadata:
        address: {{ printf "%s:%s" (include "annot.redisHost" $root) (include "annot.redisPort" $root) | quote }}
        listName: {{ .name | quote }}   # the Celery queue of this service is a Redis list of this name
        listLength: {{ $keda.listLength | quote }}
        activationListLength: {{ $keda.activationListLength | quote }}
        databaseIndex: {{ $root.Values.config.redisDb | quote }}
        {{- if and (not $root.Values.redis.enabled) $root.Values.externalRedis.tls }}
        enableTLS: "true"
        {{- end }}
      {{- if include "annot.redisSecretName" $root }}
      authenticationRef:
        name: {{ include "annot.fullname" $root }}-redis
      {{- end }}
{{- end -}}
