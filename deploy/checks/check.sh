#!/usr/bin/env bash
# The chart and manifest checks of `make test` (make deploy-check):
#  1. helm lint --strict and helm template over every values file in
#     helm/mlmesh/ci/ (and once with the ServiceMonitor API present);
#  2. values that must fail (deploy/checks/invalid-values/*.yaml) are
#     rejected by values.schema.json, the error naming what the file's
#     "# expect:" line says;
#  3. every rendering validated against the Kubernetes OpenAPI schemas of
#     1.30 and 1.37 (kubernetes-validate --strict) and scanned by checkov
#     offline (skips: checkov-skips.txt and annotations in the templates);
#  4. assertions on the rendered objects (assert_rendered.py);
#  5. yamllint on values and manifests, hadolint on the Dockerfile;
#  6. deploy/k8s/mlmesh.yaml is what the chart renders now (else: run
#     `make render-manifests` and commit).
# Each check is shown to be able to fail: a broken manifest must be refused.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
CACHE=${MLMESH_CACHE:-"$ROOT/.cache/mlmesh"}
HELM="$CACHE/bin/helm"
TOOLS="$CACHE/py/deploy-tools"
CHECKOV="$CACHE/py/checkov"
CHART="$ROOT/helm/mlmesh"
OUT="$(mktemp -d)"
trap 'rm -rf "$OUT"' EXIT

for need in "$HELM" "$TOOLS/bin/kubernetes-validate" "$CHECKOV/bin/checkov"; do
  [ -e "$need" ] || { echo "deploy-check: $need is missing (make deploy-tools installs it)" >&2; exit 1; }
done
kv() { PYTHONPATH="$TOOLS" python3 "$TOOLS/bin/kubernetes-validate" "$@"; }
step() { echo "deploy-check: $*"; }

# 1. lint and render
renders=()
for values in "$CHART"/ci/*.yaml; do
  name=$(basename "$values" .yaml)
  "$HELM" lint --strict --quiet -f "$values" "$CHART" >"$OUT/lint.log" 2>&1 || { cat "$OUT/lint.log"; exit 1; }
  "$HELM" template mlmesh "$CHART" --namespace mlmesh -f "$values" >"$OUT/$name.yaml"
  renders+=("$OUT/$name.yaml")
done
"$HELM" template mlmesh "$CHART" --namespace mlmesh --api-versions monitoring.coreos.com/v1/ServiceMonitor \
  -f "$CHART/ci/default-values.yaml" >"$OUT/with-servicemonitor.yaml"
grep -q "^kind: ServiceMonitor" "$OUT/with-servicemonitor.yaml" || { echo "no ServiceMonitor where the API exists" >&2; exit 1; }
if grep -q "^kind: ServiceMonitor" "$OUT/default-values.yaml"; then
  echo "a ServiceMonitor was rendered where the API does not exist" >&2; exit 1
fi
renders+=("$OUT/with-servicemonitor.yaml")
step "helm lint --strict + template: ${#renders[@]} renderings ($("$HELM" version --short))"

# 2. bad values are refused, naming the field
for bad in "$ROOT"/deploy/checks/invalid-values/*.yaml; do
  expect=$(sed -n 's/^# expect: //p' "$bad")
  if "$HELM" template mlmesh "$CHART" -f "$bad" >/dev/null 2>"$OUT/err"; then
    echo "values.schema.json accepted $(basename "$bad")" >&2; exit 1
  fi
  grep -q -- "$expect" "$OUT/err" || { echo "$(basename "$bad"): error does not name $expect:" >&2; cat "$OUT/err" >&2; exit 1; }
done
step "values.schema.json refused $(ls "$ROOT"/deploy/checks/invalid-values/*.yaml | wc -l) bad values files, each naming the field"

# 3. schemas of 1.30 and the newest supported, and checkov
broken="$OUT/broken.yaml"
sed '0,/^  replicas:/s//  replicaz:/' "$OUT/default-values.yaml" >"$broken"
for k8s in 1.30.0 1.37.0; do
  for r in "${renders[@]}"; do
    kv --strict --quiet --no-warn -k "$k8s" "$r" || { echo "invalid for Kubernetes $k8s: $r" >&2; exit 1; }
  done
  if kv --strict --quiet --no-warn -k "$k8s" "$broken" >/dev/null 2>&1; then
    echo "kubernetes-validate accepted a broken manifest" >&2; exit 1
  fi
done
step "kubernetes-validate --strict: valid for Kubernetes 1.30 and 1.37 (ServiceMonitor has no upstream schema)"
skips=$(grep -v '^#' "$ROOT/deploy/checks/checkov-skips.txt" | awk 'NF {print $1}' | paste -sd, -)
mkdir -p "$OUT/scan"
cp "${renders[@]}" "$OUT/scan/"
PYTHONPATH="$CHECKOV" python3 "$CHECKOV/bin/checkov" --skip-download --quiet --compact \
  --framework kubernetes --skip-check "$skips" -d "$OUT/scan" >"$OUT/checkov.log" 2>&1 \
  || { cat "$OUT/checkov.log"; exit 1; }
step "checkov: $(grep -o 'Passed checks: [0-9]*, Failed checks: [0-9]*, Skipped checks: [0-9]*' "$OUT/checkov.log" | head -1) (global skips: $skips)"

# 4. assertions
python3 "$ROOT/deploy/checks/assert_rendered.py" "$OUT/default-values.yaml" --discovering gateway
python3 "$ROOT/deploy/checks/assert_rendered.py" "$OUT/external-stores-values.yaml" --discovering gateway --admin-token --tls
if python3 "$ROOT/deploy/checks/assert_rendered.py" "$OUT/external-stores-values.yaml" --discovering gateway --tls >/dev/null; then
  echo "assert_rendered.py accepted an admin token where none was configured" >&2; exit 1
fi
if python3 "$ROOT/deploy/checks/assert_rendered.py" "$OUT/default-values.yaml" --discovering gateway --tls >/dev/null; then
  echo "assert_rendered.py accepted plaintext where mutual TLS was asked for" >&2; exit 1
fi
python3 "$ROOT/deploy/checks/assert_rendered.py" "$OUT/minimal-values.yaml"
sed 's/name: MLMESH_TELEMETRY__LOG_FORMAT/name: MLMESH_TELEMETRY__LOGFORMAT/' \
  "$OUT/default-values.yaml" >"$OUT/misspelt.yaml"
if python3 "$ROOT/deploy/checks/assert_rendered.py" "$OUT/misspelt.yaml" --discovering gateway >/dev/null; then
  echo "assert_rendered.py accepted an environment variable that is no setting" >&2; exit 1
fi
if python3 "$ROOT/deploy/checks/assert_rendered.py" "$OUT/default-values.yaml" >/dev/null; then
  echo "assert_rendered.py accepted RBAC for a service that does not discover" >&2; exit 1
fi
"$HELM" template mlmesh "$CHART" --namespace mlmesh -f "$CHART/ci/default-values.yaml" \
  --set networkPolicy.enabled=false >"$OUT/open.yaml"
if python3 "$ROOT/deploy/checks/assert_rendered.py" "$OUT/open.yaml" --discovering gateway >/dev/null; then
  echo "assert_rendered.py accepted services without NetworkPolicies" >&2; exit 1
fi
step "rendered objects: probes, resources, security context, PDBs, RBAC only for the gateway, each service reachable only from its callers, the admin token mounted where configured, mutual TLS with cert-manager Certificates where enabled, every MLMESH_* variable a setting of its service"

# 5. lint YAML and the Dockerfile
PYTHONPATH="$TOOLS" python3 "$TOOLS/bin/yamllint" -s -c "$ROOT/deploy/checks/yamllint.yaml" \
  "$CHART/values.yaml" "$CHART"/ci/*.yaml "$ROOT"/deploy/k8s/*.yaml "$ROOT"/deploy/checks/invalid-values/*.yaml
"$TOOLS/bin/hadolint" "$ROOT/deploy/docker/Dockerfile"
step "yamllint, hadolint: clean"

# 6. the checked-in plain manifests are current
"$ROOT/deploy/k8s/render.sh" "$OUT/k8s.yaml"
if ! diff -u "$ROOT/deploy/k8s/mlmesh.yaml" "$OUT/k8s.yaml" >"$OUT/k8s.diff"; then
  head -40 "$OUT/k8s.diff" >&2
  echo "deploy/k8s/mlmesh.yaml is stale: run make render-manifests and commit it" >&2; exit 1
fi
step "deploy/k8s/mlmesh.yaml matches the chart"
