{{/* Chart name, overridable with nameOverride. */}}
{{- define "aside.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Fully qualified app name: the release name when it already contains the chart name. */}}
{{- define "aside.fullname" -}}
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

{{/* Chart name and version for the helm.sh/chart label. */}}
{{- define "aside.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Common labels; pass a dict with ctx (the root context) and component. */}}
{{- define "aside.labels" -}}
helm.sh/chart: {{ include "aside.chart" .ctx }}
{{ include "aside.selectorLabels" . }}
app.kubernetes.io/version: {{ .ctx.Values.image.tag | default .ctx.Chart.AppVersion | quote }}
app.kubernetes.io/component: {{ .component }}
app.kubernetes.io/part-of: aside
app.kubernetes.io/managed-by: {{ .ctx.Release.Service }}
{{- end }}

{{/* Selector labels: name + instance only (house style); name is per workload. */}}
{{- define "aside.selectorLabels" -}}
app.kubernetes.io/name: {{ .name | default (include "aside.name" .ctx) }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
{{- end }}

{{/* Service account of the API pods. */}}
{{- define "aside.serviceAccountName" -}}
{{- include "aside.fullname" . }}
{{- end }}

{{/* The app image reference: repository:tag, tag defaulting to appVersion (never latest). */}}
{{- define "aside.image" -}}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) }}
{{- end }}

{{/* Name of the Secret holding DATABASE_URL, REDIS_URL and API_TOKEN. */}}
{{- define "aside.secretName" -}}
{{- .Values.secrets.existingSecret | default (include "aside.fullname" .) }}
{{- end }}

{{/* Name of the Secret holding the Postgres credentials. */}}
{{- define "aside.postgresSecretName" -}}
{{- .Values.postgres.auth.existingSecret | default (printf "%s-postgres" (include "aside.fullname" .)) }}
{{- end }}

{{/* Name of the Secret holding the Redis password. */}}
{{- define "aside.redisSecretName" -}}
{{- .Values.redis.auth.existingSecret | default (printf "%s-redis" (include "aside.fullname" .)) }}
{{- end }}

{{/* Restricted container securityContext shared by every workload. */}}
{{- define "aside.containerSecurityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
capabilities:
  drop:
    - ALL
{{- end }}
