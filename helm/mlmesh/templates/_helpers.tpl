{{/*
The services of the chart: name (as in images and binaries) → values key.
*/}}
{{- define "mlmesh.services" -}}
gateway: gateway
embedding: embedding
inference: inference
vector-search: vectorSearch
registry: registry
{{- end }}

{{/* Services that keep state on a volume of their own (StatefulSets). */}}
{{- define "mlmesh.stateful" -}}
vector-search: true
registry: true
{{- end }}

{{- define "mlmesh.fullname" -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 50 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 50 | trimSuffix "-" -}}
{{- end -}}
{{- end }}

{{/* Name of a service's objects: <fullname>-<service>. Args: root, service. */}}
{{- define "mlmesh.name" -}}
{{- printf "%s-%s" (include "mlmesh.fullname" .root) .service | trunc 63 | trimSuffix "-" -}}
{{- end }}

{{- define "mlmesh.selectorLabels" -}}
app.kubernetes.io/name: mlmesh
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .service }}
{{- end }}

{{/* Labels of a service's `helm test` pod: not its selector labels, so no
Service, PDB or policy takes it for a replica. Args: root, service. */}}
{{- define "mlmesh.testLabels" -}}
app.kubernetes.io/name: mlmesh
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: health-test
{{- end }}

{{- define "mlmesh.labels" -}}
{{ include "mlmesh.selectorLabels" . }}
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
app.kubernetes.io/part-of: mlmesh
helm.sh/chart: {{ printf "%s-%s" .root.Chart.Name .root.Chart.Version }}
{{- end }}

{{- define "mlmesh.image" -}}
{{- $img := .root.Values.image -}}
{{- $tag := default .root.Chart.AppVersion $img.tag -}}
{{- if $img.registry -}}
{{- printf "%s/%s%s:%s" $img.registry $img.repositoryPrefix .service $tag -}}
{{- else -}}
{{- printf "%s%s:%s" $img.repositoryPrefix .service $tag -}}
{{- end -}}
{{- end }}

{{/* Whether a service discovers others through EndpointSlices. */}}
{{- define "mlmesh.discovers" -}}
{{- if and (eq .service "gateway") (eq .root.Values.gateway.discovery "kubernetes") -}}true{{- end -}}
{{- end }}

{{/* "true" when service S serves mutual TLS: every service but the
gateway, whose faces are the public ones. Args: root, service. */}}
{{- define "mlmesh.servesTls" -}}
{{- if and .root.Values.tls.enabled (ne .service "gateway") }}true{{ end -}}
{{- end }}

{{/* The DNS names of service S's certificate: its Service as dialled
(static addresses), and its cluster names (what the gateway checks for
replicas it found by discovery). Args: root, service. */}}
{{- define "mlmesh.tlsNames" -}}
{{- $n := include "mlmesh.name" . -}}
{{- $ns := .root.Release.Namespace -}}
- {{ $n }}
- {{ $n }}.{{ $ns }}
- {{ $n }}.{{ $ns }}.svc
- {{ $n }}.{{ $ns }}.svc.cluster.local
{{- end }}
