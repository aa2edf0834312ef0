{{/* Settings of each service that come from other values. Args: root, service. */}}

{{- define "mlmesh.env.gateway" -}}
{{- $v := .root.Values -}}
- name: MLMESH_HTTP__LISTEN
  value: "0.0.0.0:{{ $v.gateway.ports.http }}"
- name: MLMESH_AUTH__MODE
  value: {{ $v.gateway.authMode | quote }}
{{- if eq $v.gateway.discovery "kubernetes" }}
- name: MLMESH_DOWNSTREAM__DISCOVERY
  value: kubernetes
- name: MLMESH_DOWNSTREAM__NAMESPACE
  valueFrom:
    fieldRef: {fieldPath: metadata.namespace}
{{- end }}
{{- /* kubernetes: <Service>:<port name> (the replicas are its endpoints); static: the Service's address. */}}
{{- $k8s := eq $v.gateway.discovery "kubernetes" }}
- name: MLMESH_DOWNSTREAM__EMBEDDING
  value: {{ printf "%s:%v" (include "mlmesh.name" (dict "root" .root "service" "embedding")) (ternary "grpc" $v.embedding.ports.grpc $k8s) | quote }}
- name: MLMESH_DOWNSTREAM__VECTOR_SEARCH
  value: {{ printf "%s:%v" (include "mlmesh.name" (dict "root" .root "service" "vector-search")) (ternary "grpc" $v.vectorSearch.ports.grpc $k8s) | quote }}
{{- if $v.inference.enabled }}
- name: MLMESH_DOWNSTREAM__INFERENCE
  value: {{ printf "%s:%v" (include "mlmesh.name" (dict "root" .root "service" "inference")) (ternary "grpc" $v.inference.ports.grpc $k8s) | quote }}
{{- end }}
{{- end }}

{{- define "mlmesh.env.embedding" -}}
{{- end }}

{{- define "mlmesh.env.inference" -}}
{{- $v := .root.Values -}}
{{- if and $v.registry.enabled $v.inference.registryModels }}
- name: MLMESH_INFERENCE__REGISTRY_ADDR
  value: {{ printf "%s:%v" (include "mlmesh.name" (dict "root" .root "service" "registry")) $v.registry.ports.grpc | quote }}
- name: MLMESH_INFERENCE__REGISTRY_MODELS
  value: {{ join "," $v.inference.registryModels | quote }}
{{- end }}
{{- end }}

{{- define "mlmesh.env.vector-search" -}}
{{- $q := .root.Values.vectorSearch.qdrant -}}
{{- if $q.url }}
- name: MLMESH_VECTOR__BACKEND
  value: qdrant
- name: MLMESH_QDRANT__URL
  value: {{ $q.url | quote }}
{{- with $q.apiKeySecret }}
- name: MLMESH_QDRANT__API_KEY
  valueFrom:
    secretKeyRef: {name: {{ . }}, key: apiKey}
{{- end }}
{{- end }}
{{- end }}

{{- define "mlmesh.env.registry" -}}
{{- $r := .root.Values.registry -}}
{{- if or $r.postgres.urlSecret $r.s3.blobUrl }}
{{- with $r.postgres.urlSecret }}
- name: MLMESH_REGISTRY__METADATA_URL
  valueFrom:
    secretKeyRef: {name: {{ . }}, key: url}
{{- end }}
{{- if $r.s3.blobUrl }}
- name: MLMESH_REGISTRY__BLOB_URL
  value: {{ $r.s3.blobUrl | quote }}
{{- with $r.s3.endpoint }}
- name: MLMESH_REGISTRY__S3__ENDPOINT
  value: {{ . | quote }}
{{- if hasPrefix "http://" . }}
- name: MLMESH_REGISTRY__S3__ALLOW_HTTP
  value: "true"
{{- end }}
{{- end }}
{{- with $r.s3.region }}
- name: MLMESH_REGISTRY__S3__REGION
  value: {{ . | quote }}
{{- end }}
{{- with $r.s3.credentialsSecret }}
- name: MLMESH_REGISTRY__S3__ACCESS_KEY_ID
  valueFrom:
    secretKeyRef: {name: {{ . }}, key: accessKeyId}
- name: MLMESH_REGISTRY__S3__SECRET_ACCESS_KEY
  valueFrom:
    secretKeyRef: {name: {{ . }}, key: secretAccessKey}
{{- end }}
{{- end }}
{{- end }}
{{- end }}

{{/* TLS files (Secret <name>-tls at /etc/mlmesh/tls) and identities.
Args: root, service. */}}
{{- define "mlmesh.env.tls" -}}
{{- $v := .root.Values -}}
{{- if $v.tls.enabled }}
{{- if include "mlmesh.servesTls" . }}
- name: MLMESH_SERVER__TLS__CERT_FILE
  value: /etc/mlmesh/tls/tls.crt
- name: MLMESH_SERVER__TLS__KEY_FILE
  value: /etc/mlmesh/tls/tls.key
- name: MLMESH_SERVER__TLS__CLIENT_CA_FILE
  value: /etc/mlmesh/tls/ca.crt
{{- end }}
{{- if eq .service "inference" }}
{{- /* The gateway forwards model loads and unloads: its certificate may. */}}
- name: MLMESH_SERVER__TLS__ADMIN_IDENTITIES
  value: {{ printf "%s.%s.svc" (include "mlmesh.name" (dict "root" .root "service" "gateway")) .root.Release.Namespace | quote }}
{{- range $k := list "CA_FILE" "CERT_FILE" "KEY_FILE" }}
- name: MLMESH_INFERENCE__REGISTRY_TLS__{{ $k }}
  value: /etc/mlmesh/tls/{{ get (dict "CA_FILE" "ca.crt" "CERT_FILE" "tls.crt" "KEY_FILE" "tls.key") $k }}
{{- end }}
{{- end }}
{{- if and (eq .service "registry") $v.tls.registryAdminIdentities }}
- name: MLMESH_SERVER__TLS__ADMIN_IDENTITIES
  value: {{ join "," $v.tls.registryAdminIdentities | quote }}
{{- end }}
{{- if eq .service "gateway" }}
{{- range $k := list "CA_FILE" "CERT_FILE" "KEY_FILE" }}
- name: MLMESH_DOWNSTREAM__TLS__{{ $k }}
  value: /etc/mlmesh/tls/{{ get (dict "CA_FILE" "ca.crt" "CERT_FILE" "tls.crt" "KEY_FILE" "tls.key") $k }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}
