{{/* Names, labels and the pieces both Deployments share. */}}

{{- define "ossature.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 40 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{/* The operator's objects: `<fullname>-operator`. */}}
{{- define "ossature.operator.name" -}}
{{- printf "%s-operator" (include "ossature.fullname" .) -}}
{{- end -}}

{{/* The control plane's objects: `<fullname>-control-plane`. */}}
{{- define "ossature.controlPlane.name" -}}
{{- printf "%s-control-plane" (include "ossature.fullname" .) -}}
{{- end -}}

{{- define "ossature.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: ossature
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
{{- end -}}

{{/* Selector labels of one component: (list $ "operator"). */}}
{{- define "ossature.selectorLabels" -}}
{{- $root := index . 0 -}}
app.kubernetes.io/name: ossature
app.kubernetes.io/instance: {{ $root.Release.Name }}
app.kubernetes.io/component: {{ index . 1 }}
{{- end -}}

{{- define "ossature.componentLabels" -}}
{{ include "ossature.labels" (index . 0) }}
{{ include "ossature.selectorLabels" . }}
{{- end -}}

{{- define "ossature.image" -}}
{{- $tag := .Values.image.tag | default .Chart.AppVersion -}}
{{- if .Values.image.digest -}}
{{ .Values.image.repository }}@{{ .Values.image.digest }}
{{- else -}}
{{ .Values.image.repository }}:{{ $tag }}
{{- end -}}
{{- end -}}

{{/* The restricted Pod Security Standard, for the pod and its container. */}}
{{- define "ossature.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: 65532
runAsGroup: 65532
fsGroup: 65532
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{- define "ossature.containerSecurityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
runAsNonRoot: true
capabilities:
  drop: [ALL]
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{/* `--residency REGION=CLUSTER,...` for each region, sorted. */}}
{{- define "ossature.residencyArgs" -}}
{{- range $region, $clusters := .Values.platform.residency }}
- --residency={{ $region }}={{ join "," $clusters }}
{{- end }}
{{- end -}}

{{/* Flags both binaries take alike, from `platform`. */}}
{{- define "ossature.platformArgs" -}}
- --root-domain={{ .Values.platform.rootDomain }}
- --max-dedicated-realms={{ .Values.platform.maxDedicatedRealms }}
{{- include "ossature.residencyArgs" . }}
{{- with .Values.platform.hostIssuer }}
- --host-issuer={{ . }}
{{- end }}
{{- if not .Values.edge.enabled }}
- --no-edge
{{- end }}
{{- end -}}

{{/* The pods' scheduling settings of one component's values. */}}
{{- define "ossature.scheduling" -}}
{{- with .nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}
