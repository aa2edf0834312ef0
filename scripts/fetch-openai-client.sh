#!/usr/bin/env bash
# Installs the official OpenAI Python client (pinned, with its dependencies,
# in scripts/openai-client.txt) from PyPI into a cache folder outside git,
# for the test that runs it against the gateway's /v1/embeddings.
#
# Idempotent: a stamp holding the requirements' sha256 marks a finished
# install; a changed requirements file or a half-finished install is redone.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
CACHE=${MLMESH_CACHE:-"$ROOT/.cache/mlmesh"}
REQS="$ROOT/scripts/openai-client.txt"
DEST="$CACHE/py/openai"
PYTHON=${PYTHON:-python3}
WANT="$(sha256sum "$REQS" | cut -d' ' -f1) $("$PYTHON" -c 'import sys; print("%d.%d" % sys.version_info[:2])')"

if [ -f "$DEST/.mlmesh-stamp" ] && [ "$(cat "$DEST/.mlmesh-stamp")" = "$WANT" ]; then
  echo "openai client: installed in $DEST"
  exit 0
fi

echo "openai client: pip install -r scripts/openai-client.txt into $DEST" >&2
rm -rf "$DEST"
mkdir -p "$DEST"
# --no-deps: the file pins every package, so nothing else is resolved.
"$PYTHON" -m pip install --quiet --disable-pip-version-check --root-user-action=ignore --no-warn-conflicts \
  --no-deps --only-binary=:all: --target "$DEST" -r "$REQS"
echo "$WANT" > "$DEST/.mlmesh-stamp"
echo "openai client: installed in $DEST"
