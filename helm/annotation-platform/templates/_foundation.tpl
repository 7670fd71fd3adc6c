{{/* A foundation model (SAM / SAM 2) from a checkpoint the operator brings (foundationModel in values.yaml,
     docs/sre-guide.md "Foundation models"). Each Triton pod exports it to ONNX in an init container
     (deploy/triton/foundation/export.Dockerfile) into /foundation, a third model repository: <name>_encoder
     (once per annotation session) and <name>_decoder (per click), scaled as Triton models on the GPU pods
     (instances per GPU in their configs/gpu.pbtxt). The checkpoint comes from a volume or object storage. */}}

{{- define "annot.foundation.args" -}}
{{- if .Values.foundationModel.enabled }}
- --model-repository=/foundation
{{- end }}
{{- end -}}

{{- define "annot.foundation.checkpointPath" -}}
{{- $f := .Values.foundationModel -}}
{{- if $f.checkpoint.url -}}/checkpoint/{{ base $f.checkpoint.file }}{{- else -}}/checkpoint/{{ $f.checkpoint.file }}{{- end -}}
{{- end -}}

{{- define "annot.foundation.initContainers" -}}
{{- if .Values.foundationModel.enabled }}
{{- $f := .Values.foundationModel -}}
{{- $t := .Values.triton -}}
{{- if $f.checkpoint.url }}
- name: fetch-checkpoint
  image: {{ printf "%s:%s" $f.fetchImage.repository $f.fetchImage.tag }}
  imagePullPolicy: {{ $f.fetchImage.pullPolicy }}
  command: ["aws", "s3", "cp", {{ $f.checkpoint.url | quote }}, {{ include "annot.foundation.checkpointPath" . | quote }}]
  env:
    - {name: HOME, value: /tmp}
  {{- with $f.checkpoint.credentialsSecret }}
  envFrom:
    - secretRef: {name: {{ . }}}
  {{- end }}
  resources:
    {{- toYaml $f.fetchResources | nindent 4 }}
  securityContext:
    {{- toYaml $t.containerSecurityContext | nindent 4 }}
  volumeMounts:
    - {name: tmp, mountPath: /tmp}
    - {name: foundation-checkpoint, mountPath: /checkpoint}
{{- end }}
- name: export-foundation-model
  image: {{ printf "%s:%s" $f.exportImage.repository ($f.exportImage.tag | default .Chart.AppVersion) }}
  imagePullPolicy: {{ $f.exportImage.pullPolicy }}
  args:
    - --family={{ $f.family }}
    - --variant={{ $f.variant }}
    - --name={{ $f.name }}
    - --checkpoint={{ include "annot.foundation.checkpointPath" . }}
    - --out=/foundation
    - --encoder-instances={{ $f.encoderInstances }}
    - --decoder-instances={{ $f.decoderInstances }}
    - --skip-if-current
    {{- if not $f.verify }}
    - --no-verify
    {{- end }}
  env:
    - {name: HOME, value: /tmp}
  resources:
    {{- toYaml $f.exportResources | nindent 4 }}
  securityContext:
    {{- toYaml $t.containerSecurityContext | nindent 4 }}
  volumeMounts:
    - {name: tmp, mountPath: /tmp}
    - {name: foundation-models, mountPath: /foundation}
    - {name: foundation-checkpoint, mountPath: /checkpoint, readOnly: {{ not $f.checkpoint.url }}}
{{- end }}
{{- end -}}

{{- define "annot.foundation.volumeMounts" -}}
{{- if .Values.foundationModel.enabled }}
- {name: foundation-models, mountPath: /foundation, readOnly: true}
{{- end }}
{{- end -}}

{{- define "annot.foundation.volumes" -}}
{{- if .Values.foundationModel.enabled }}
{{- $f := .Values.foundationModel -}}
- name: foundation-models
  emptyDir: {sizeLimit: {{ $f.exportSizeLimit }}}
- name: foundation-checkpoint
  {{- if $f.checkpoint.url }}
  emptyDir: {sizeLimit: {{ $f.exportSizeLimit }}}
  {{- else }}
  persistentVolumeClaim:
    claimName: {{ required "foundationModel.checkpoint.existingClaim (or checkpoint.url) is required when foundationModel.enabled" $f.checkpoint.existingClaim }}
    readOnly: true
  {{- end }}
{{- end }}
{{- end -}}

{{/* ANNOT_SEGMENTATION_PROJECT_MODELS: the projects whose interactive model the foundation model is. */}}
{{- define "annot.foundation.config" -}}
{{- if .Values.foundationModel.enabled }}
{{- $f := .Values.foundationModel -}}
{{- $models := dict -}}
{{- range $f.projects }}{{- $_ := set $models . (printf "%s_decoder" $f.name) -}}{{- end }}
ANNOT_SEGMENTATION_PROJECT_MODELS: {{ toJson $models | quote }}
{{- end }}
{{- end -}}
