{{- define "rudder.labels" -}}
app.kubernetes.io/name: rudder
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ .Chart.Name }}-{{ .Chart.Version }}
{{- end }}

{{- define "rudder.selector" -}}
app.kubernetes.io/name: rudder
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "rudder.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end }}

{{/*
The control plane's identity is fixed in the server: sidecars, the certificate endpoint
and xdsctl all check spiffe://TRUST_DOMAIN/ns/rudder-system/sa/rudder. Installed
anywhere else it would serve no sidecar, so refuse to render.
*/}}
{{- define "rudder.namespaceCheck" -}}
{{- if ne .Release.Namespace "rudder-system" -}}
{{- fail (printf "install the rudder chart into namespace rudder-system, not %q (helm install ... --namespace rudder-system --create-namespace): the control plane's identity spiffe://%s/ns/rudder-system/sa/rudder is fixed in the server and checked by every sidecar" .Release.Namespace .Values.trustDomain) -}}
{{- end -}}
{{- end }}

{{/* "true" when the helm test Pod is wanted (absent, as after --reuse-values, counts as on). */}}
{{- define "rudder.xdsctlTest" -}}
{{- if dig "enabled" true (.Values.xdsctlTest | default dict) -}}true{{- end -}}
{{- end }}
