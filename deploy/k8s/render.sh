#!/usr/bin/env bash
# Renders the plain manifests for kubectl users from the Helm chart with its
# default values (release "mlmesh", namespace "mlmesh", no helm test pods):
#
#   deploy/k8s/render.sh [OUT]      (default deploy/k8s/mlmesh.yaml)
#   kubectl create namespace mlmesh && kubectl apply -n mlmesh -f deploy/k8s/mlmesh.yaml
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
HELM=${HELM:-"${MLMESH_CACHE:-$ROOT/.cache/mlmesh}/bin/helm"}
OUT=${1:-"$ROOT/deploy/k8s/mlmesh.yaml"}
{
  echo "# Rendered from helm/mlmesh with its default values by deploy/k8s/render.sh"
  echo "# (make render-manifests); do not edit: change the chart and render again."
  "$HELM" template mlmesh "$ROOT/helm/mlmesh" --namespace mlmesh --skip-tests
} >"$OUT"
