{{/* The chart's name, or nameOverride. */}}
{{- define "kappa-operator.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The full name of every object: fullnameOverride, or `<release>-<name>` (just the release when it already
contains the name), cut to 63 characters as Kubernetes names and labels require.
*/}}
{{- define "kappa-operator.fullname" -}}
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

{{- define "kappa-operator.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels on every object. */}}
{{- define "kappa-operator.labels" -}}
helm.sh/chart: {{ include "kappa-operator.chart" . | quote }}
{{ include "kappa-operator.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service | quote }}
app.kubernetes.io/part-of: kappa
{{- end }}

{{/* Labels the Deployment and the Service select pods by; never change them on upgrade. */}}
{{- define "kappa-operator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "kappa-operator.name" . | quote }}
app.kubernetes.io/instance: {{ .Release.Name | quote }}
{{- end }}

{{/* The ServiceAccount the operator runs as. */}}
{{- define "kappa-operator.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "kappa-operator.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name: name an existing ServiceAccount when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The image: pinned by image.digest when set, else by its tag (default: the chart's appVersion). */}}
{{- define "kappa-operator.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (toString (default .Chart.AppVersion .Values.image.tag)) }}
{{- end }}
{{- end }}

{{/*
The full name with a suffix (`<fullname>-<suffix>`), the full name cut so that the whole stays within the
63 characters of a Service name (a DNS label). Call: include "kappa-operator.suffixed" (list . "metrics").
*/}}
{{- define "kappa-operator.suffixed" -}}
{{- $ctx := index . 0 }}
{{- $suffix := index . 1 }}
{{- $base := include "kappa-operator.fullname" $ctx | trunc (int (sub 62 (len $suffix))) | trimSuffix "-" }}
{{- printf "%s-%s" $base $suffix }}
{{- end }}

{{/* The cluster id, required: every AWS name and ownership tag carries it. */}}
{{- define "kappa-operator.clusterId" -}}
{{- required "clusterId is required: set --set clusterId=<name>, 1 to 16 lowercase letters, digits and dashes starting with a letter, unique among the clusters sharing this AWS account (e.g. prod-eu1)" .Values.clusterId }}
{{- end }}

{{/* A Prometheus duration (`1m30s`, `500ms`; the schema checks the form) in milliseconds. */}}
{{- define "kappa-operator.durationMs" -}}
{{- $ms := 0 }}
{{- range regexFindAll "[0-9]+(ms|s|m|h)" . -1 }}
{{- $n := regexFind "^[0-9]+" . | atoi }}
{{- $unit := trimPrefix (regexFind "^[0-9]+" .) . }}
{{- $ms = add $ms (mul $n (get (dict "ms" 1 "s" 1000 "m" 60000 "h" 3600000) $unit)) }}
{{- end }}
{{- $ms }}
{{- end }}
