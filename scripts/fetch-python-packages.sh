#!/usr/bin/env bash
# Installs a pinned set of Python packages from PyPI (a requirements file
# that pins every package, dependencies included) into a cache folder
# outside git: .cache/mlmesh/py/NAME. Tests put that folder on PYTHONPATH.
#
#   scripts/fetch-python-packages.sh NAME REQUIREMENTS
#
# Idempotent: a stamp holding the requirements' sha256 and the Python
# version marks a finished install; a changed file or a half-finished
# install is redone.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
NAME=$1
REQS=$2
CACHE=${MLMESH_CACHE:-"$ROOT/.cache/mlmesh"}
DEST="$CACHE/py/$NAME"
PYTHON=${PYTHON:-python3}
WANT="$(sha256sum "$REQS" | cut -d' ' -f1) $("$PYTHON" -c 'import sys; print("%d.%d" % sys.version_info[:2])')"

if [ -f "$DEST/.mlmesh-stamp" ] && [ "$(cat "$DEST/.mlmesh-stamp")" = "$WANT" ]; then
  echo "$NAME: installed in $DEST"
  exit 0
fi

echo "$NAME: pip install -r $REQS into $DEST" >&2
rm -rf "$DEST"
mkdir -p "$DEST"
# --no-deps: the file pins every package, so nothing else is resolved.
"$PYTHON" -m pip install --quiet --disable-pip-version-check --root-user-action=ignore --no-warn-conflicts \
  --no-deps --only-binary=:all: --target "$DEST" -r "$REQS"
echo "$WANT" > "$DEST/.mlmesh-stamp"
echo "$NAME: installed in $DEST"
