{{- define "tf-serving.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "tf-serving.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else if contains (include "tf-serving.name" .) .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name (include "tf-serving.name" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "tf-serving.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: redis-consumer
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
{{- end -}}

{{- define "tf-serving.selectorLabels" -}}
app.kubernetes.io/name: {{ include "tf-serving.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "tf-serving.image" -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default (printf "%s-gpu" .Chart.AppVersion) | toString) -}}
{{- end -}}
{{- end -}}

{{- define "tf-serving.syncImage" -}}
{{- $i := .Values.modelRepository.sync.image -}}
{{- if $i.digest -}}
{{- printf "%s@%s" $i.repository $i.digest -}}
{{- else -}}
{{- printf "%s:%s" $i.repository ($i.tag | toString) -}}
{{- end -}}
{{- end -}}

{{/* "true" when the models come from S3 and must be synced into the models emptyDir first. */}}
{{- define "tf-serving.syncS3" -}}
{{- if hasPrefix "s3://" .Values.modelRepository.url -}}true{{- end -}}
{{- end -}}

{{/* Where TF Serving reads the models: the synced emptyDir for S3, else the repository itself. */}}
{{- define "tf-serving.modelRoot" -}}
{{- if include "tf-serving.syncS3" . -}}
/models
{{- else -}}
{{- .Values.modelRepository.url | trimSuffix "/" -}}
{{- end -}}
{{- end -}}

{{/* Space-separated queue names this TF Serving serves, as a PromQL regex alternative. */}}
{{- define "tf-serving.queueRegex" -}}
{{- join "|" .Values.autoscaling.queueItems.queues -}}
{{- end -}}

{{/* HPA behaviour shared by the HPA and KEDA's HPA. */}}
{{- define "tf-serving.behavior" -}}
{{- $b := .Values.autoscaling.behavior -}}
scaleUp:
  stabilizationWindowSeconds: {{ $b.scaleUpStabilizationSeconds }}
  policies:
    - type: Pods
      value: {{ $b.scaleUpPods }}
      periodSeconds: 60
  selectPolicy: Max
scaleDown:
  stabilizationWindowSeconds: {{ $b.scaleDownStabilizationSeconds }}
  policies:
    - type: Pods
      value: 1
      periodSeconds: {{ $b.scaleDownPeriodSeconds }}
  selectPolicy: Min
{{- end -}}
