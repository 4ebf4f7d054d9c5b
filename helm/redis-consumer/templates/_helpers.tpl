{{/* Names, labels and the queue name shared by every template of the chart. */}}

{{- define "redis-consumer.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "redis-consumer.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else if contains (include "redis-consumer.name" .) .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name (include "redis-consumer.name" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "redis-consumer.exporterName" -}}
{{- printf "%s-exporter" (include "redis-consumer.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* The Redis list the workers read: queue + "-zip" for the zip consumer, unless queueName says. */}}
{{- define "redis-consumer.queueName" -}}
{{- if .Values.queueName -}}
{{- .Values.queueName -}}
{{- else if eq .Values.consumerType "zip" -}}
{{- printf "%s-zip" .Values.queue -}}
{{- else -}}
{{- .Values.queue -}}
{{- end -}}
{{- end -}}

{{- define "redis-consumer.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: redis-consumer
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
{{- end -}}

{{- define "redis-consumer.selectorLabels" -}}
app.kubernetes.io/name: {{ include "redis-consumer.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: worker
{{- end -}}

{{- define "redis-consumer.exporterSelectorLabels" -}}
app.kubernetes.io/name: {{ include "redis-consumer.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: exporter
{{- end -}}

{{- define "redis-consumer.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "redis-consumer.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* repository@digest when image.digest is set (immutable), else repository:tag. */}}
{{- define "redis-consumer.image" -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag | toString) -}}
{{- end -}}
{{- end -}}

{{- define "redis-consumer.secretName" -}}
{{- if .Values.credentials.existingSecret -}}
{{- .Values.credentials.existingSecret -}}
{{- else if .Values.credentials.create -}}
{{- printf "%s-credentials" (include "redis-consumer.fullname" .) -}}
{{- end -}}
{{- end -}}

{{/* Redis connection env shared by worker and exporter. */}}
{{- define "redis-consumer.redisEnv" -}}
- name: REDIS_HOST
  value: {{ .Values.redis.host | quote }}
- name: REDIS_PORT
  value: {{ .Values.redis.port | quote }}
{{- if .Values.redis.url }}
- name: REDIS_URL
  value: {{ .Values.redis.url | quote }}
{{- end }}
{{- if .Values.redis.sentinelMaster }}
- name: REDIS_SENTINEL_MASTER
  value: {{ .Values.redis.sentinelMaster | quote }}
{{- end }}
{{- end -}}

{{/* The PromQL selector of this release's queue. */}}
{{- define "redis-consumer.queueSelector" -}}
queue="{{ include "redis-consumer.queueName" . }}"
{{- end -}}


{{/* Recording rules this release writes (each carries queue="<list>", so releases never collide). */}}
{{- define "redis-consumer.itemsRecord" -}}queue:redis_consumer_queue_items:max{{- end -}}
{{- define "redis-consumer.cappedRecord" -}}queue:redis_consumer_queue_items:capped{{- end -}}

{{/* The series the KEDA trigger reads: the capped items when the GPU ceiling is on, else the
     deduplicated items (max over exporter replicas). The HPA reads the same series through the
     prometheus-adapter rule in the chart README. */}}
{{- define "redis-consumer.scalingRecord" -}}
{{- if .Values.autoscaling.gpuCeiling.enabled -}}
{{- include "redis-consumer.cappedRecord" . -}}
{{- else -}}
{{- include "redis-consumer.itemsRecord" . -}}
{{- end -}}
{{- end -}}

{{/* The External metric name the HPA asks prometheus-adapter for. */}}
{{- define "redis-consumer.hpaMetric" -}}
{{- if .Values.autoscaling.metricName -}}
{{- .Values.autoscaling.metricName -}}
{{- else if .Values.autoscaling.gpuCeiling.enabled -}}
redis_consumer_queue_items_capped
{{- else -}}
redis_consumer_queue_items
{{- end -}}
{{- end -}}
