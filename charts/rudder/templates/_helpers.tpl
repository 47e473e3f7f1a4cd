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

{{/* Revisions: a second control plane beside the default one (canary upgrades). Its
objects' names carry the suffix -REVISION; namespaces and pods pick it with the label
rudder.dev/rev=REVISION. */}}
{{- define "rudder.suffix" -}}
{{- with .Values.revision }}-{{ . }}{{ end -}}
{{- end }}

{{- define "rudder.fullname" -}}
rudder{{ include "rudder.suffix" . }}
{{- end }}

{{- define "rudder.webhookName" -}}
rudder-sidecar-injector{{ include "rudder.suffix" . }}
{{- end }}

{{/* What a revision cannot have: the CRDs and the node's CNI agent are the default
control plane's. */}}
{{- define "rudder.revisionCheck" -}}
{{- if .Values.revision -}}
{{- if ne (dig "install" true (.Values.crds | default dict)) false -}}
{{- fail (printf "revision %q: set crds.install=false; the CRDs belong to the default control plane's release (or the rudder-crds chart)" .Values.revision) -}}
{{- end -}}
{{- if dig "enabled" false (.Values.cni | default dict) -}}
{{- fail (printf "revision %q: cni.enabled must be false; the node's CNI agent is the default control plane's and serves every revision" .Values.revision) -}}
{{- end -}}
{{- end -}}
{{- end }}

{{- define "rudder.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end }}

{{/* The interception init container's image (a release from before it had its own value
uses the default repository). */}}
{{- define "rudder.initImage" -}}
{{ .Values.image.initRepository | default "ghcr.io/rudder-mesh/rudder-init" }}:{{ .Values.image.tag | default .Chart.AppVersion }}
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

{{/*
The init container's script with ca.source=secret: copy the CA files from the Secret's
mount (/etc/rudder/ca-secret) to /etc/rudder/ca, the key 0400 and owned by the control
plane's UID (chmod before chown: after it, root without CAP_FOWNER could not).
*/}}
{{- define "rudder.caCopyScript" -}}
cd /etc/rudder/ca-secret
for f in tls.crt{{ if .Values.ca.secretHasChain }} ca.crt{{ end }}; do cp "$f" "/etc/rudder/ca/$f"; chmod 0444 "/etc/rudder/ca/$f"; done
cp tls.key /etc/rudder/ca/tls.key
chmod 0400 /etc/rudder/ca/tls.key
chown 65532:65532 /etc/rudder/ca/tls.key
{{- end }}
