#!/bin/sh
# A public corpus of real technical text for the vector and retrieval
# benchmarks: the Python 3.11 and PostgreSQL 15 manuals as Debian packages
# them (HTML), cut into passages by doc_passages.py. The packages are
# downloaded and unpacked into the cache, not installed. Pinned to the
# versions the published figures were measured with. Benchmarks only.
#
#   benches/peers/fetch-doc-corpus.sh   -> .cache/mlmesh/corpus/docs.jsonl
set -eu
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
DEST=${MLMESH_CACHE:-"$ROOT/.cache/mlmesh"}/corpus
PYDOC=3.11.2-6+deb12u9
PGDOC=15.20-0+deb12u1
STAMP="python3.11-doc=$PYDOC postgresql-doc-15=$PGDOC $(sha256sum "$ROOT/benches/peers/doc_passages.py" | cut -d' ' -f1)"
if [ -f "$DEST/docs.jsonl" ] && [ "$(cat "$DEST/.stamp" 2>/dev/null)" = "$STAMP" ]; then
    echo "corpus: $DEST/docs.jsonl"
    exit 0
fi
rm -rf "$DEST"
mkdir -p "$DEST/debs" "$DEST/html"
cd "$DEST/debs"
# apt-get download as root warns that _apt cannot write here; harmless.
apt-get download "python3.11-doc=$PYDOC" "postgresql-doc-15=$PGDOC" 2>&1 | grep -v '^W: Download is performed unsandboxed' || true
for deb in *.deb; do dpkg-deb -x "$deb" "$DEST/html"; done
python3 "$ROOT/benches/peers/doc_passages.py" "$DEST/docs.jsonl" \
    python="$DEST/html/usr/share/doc/python3.11/html" \
    postgresql="$DEST/html/usr/share/doc/postgresql-doc-15/html"
echo "$STAMP" > "$DEST/.stamp"
echo "corpus: $DEST/docs.jsonl"
