{{/* The release's resource name, at most 63 characters. */}}
{{- define "tracer.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{/* Labels on every object. */}}
{{- define "tracer.labels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{/* The pod selector. */}}
{{- define "tracer.selectorLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{/* The Secret holding OTEL_EXPORTER_OTLP_HEADERS, if any. */}}
{{- define "tracer.headersSecret" -}}
{{- if .Values.otlp.existingSecret -}}
{{- .Values.otlp.existingSecret -}}
{{- else if .Values.otlp.headers -}}
{{- include "tracer.fullname" . }}-otlp
{{- end -}}
{{- end -}}
