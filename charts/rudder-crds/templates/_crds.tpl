{{/*
The CRDs, shared word for word by charts/rudder and charts/rudder-crds (a test keeps
the two copies equal).

Every CRD carries helm.sh/resource-policy: keep: `helm uninstall` (or an upgrade that
drops one) leaves the CRD and so every object users made of it.

The SMI CRDs (TrafficSplit, HTTPRouteGroup, TCPRoute, TrafficTarget) are not Rudder's own:
Flagger and other meshes use them too. They are installed only when absent from the
cluster or already owned by this release; a copy owned by anything else is left alone.
*/}}

{{/*
"true" when this release may own a CRD: `.existing` (what `lookup` found; always empty
under `helm template`) is empty, or its Helm ownership annotations name this release
(`.release` in `.namespace`).
*/}}
{{- define "rudder.crd.ours" -}}
{{- if not .existing -}}
true
{{- else -}}
{{- $annotations := (.existing.metadata | default dict).annotations | default dict -}}
{{- if and (eq (get $annotations "meta.helm.sh/release-name") .release) (eq (get $annotations "meta.helm.sh/release-namespace") .namespace) -}}
true
{{- end -}}
{{- end -}}
{{- end -}}

{{/* One generated CRD from files/crds (`.name`), with the keep policy added. */}}
{{- define "rudder.crd" -}}
{{- $text := .root.Files.Get (printf "files/crds/%s.yaml" .name) -}}
{{- if not $text -}}
{{- fail (printf "files/crds/%s.yaml is missing from the chart" .name) -}}
{{- end }}
---
{{ replace "\nmetadata:\n" "\nmetadata:\n  annotations:\n    helm.sh/resource-policy: keep\n" $text }}
{{- end -}}

{{/*
The CRDs to render. `.smi`, `.retryPolicy`: which ones are wanted; `.found`: the
cluster's CRDs by name (from `lookup`), to leave foreign SMI CRDs alone.
*/}}
{{- define "rudder.crds" -}}
{{- $root := .root -}}
{{- $found := .found | default dict -}}
{{- if .smi -}}
{{- range list "trafficsplits.split.smi-spec.io" "httproutegroups.specs.smi-spec.io" "tcproutes.specs.smi-spec.io" "traffictargets.access.smi-spec.io" -}}
{{- $ours := include "rudder.crd.ours" (dict "existing" (get $found .) "release" $root.Release.Name "namespace" $root.Release.Namespace) -}}
{{- if $ours }}
{{ include "rudder.crd" (dict "root" $root "name" .) }}
{{- end -}}
{{- end -}}
{{- end -}}
{{- if .retryPolicy }}
{{ include "rudder.crd" (dict "root" $root "name" "retrypolicies.policy.rudder.dev") }}
{{- end -}}
{{- end -}}

{{/* What `lookup` finds of the SMI CRDs, by name (nothing under `helm template`). */}}
{{- define "rudder.crds.found" -}}
{{- $found := dict -}}
{{- range list "trafficsplits.split.smi-spec.io" "httproutegroups.specs.smi-spec.io" "tcproutes.specs.smi-spec.io" "traffictargets.access.smi-spec.io" -}}
{{- $existing := lookup "apiextensions.k8s.io/v1" "CustomResourceDefinition" "" . -}}
{{- if $existing -}}
{{- $_ := set $found . $existing -}}
{{- end -}}
{{- end -}}
{{- toJson $found -}}
{{- end -}}
