{{/* Name of the release's objects: the release name, plus "-volplug" unless it already says volplug. */}}
{{- define "volplug.fullname" -}}
{{- if contains "volplug" .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-volplug" .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "volplug.selectorLabels" -}}
app.kubernetes.io/name: volplug
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: node
{{- end -}}

{{- define "volplug.labels" -}}
app.kubernetes.io/name: volplug
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/part-of: volplug
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}

{{/* Host directory of the driver's socket, as kubelet expects it. */}}
{{- define "volplug.socketDir" -}}
{{- printf "%s/plugins/%s" .Values.kubeletDir .Values.driverName -}}
{{- end -}}

{{/* securityContext of the sidecars: root (the socket is root-owned 0755), nothing else. */}}
{{- define "volplug.sidecarSecurityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
capabilities:
  drop: ["ALL"]
{{- end -}}

{{/*
Labels of the s3 driver's objects. Not volplug.labels: that one says
app.kubernetes.io/name volplug, and a pod of the s3 node DaemonSet carrying it
(with component node) would match the local DaemonSet's selector.
*/}}
{{- define "volplug.s3.labels" -}}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/part-of: volplug
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}

{{/* Host directory of the s3 driver's socket, as kubelet expects it. */}}
{{- define "volplug.s3.socketDir" -}}
{{- printf "%s/plugins/%s" .Values.kubeletDir .Values.s3.driverName -}}
{{- end -}}

{{/* The Secret the s3 StorageClass names: the user's, or the one the chart makes. */}}
{{- define "volplug.s3.secretName" -}}
{{- .Values.s3.existingSecret | default (printf "%s-s3" (include "volplug.fullname" .)) -}}
{{- end -}}
