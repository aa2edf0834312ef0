#!/usr/bin/env python3
"""Trains the demo topic classifier: texts (scripts/demo/topics.tsv) →
all-MiniLM-L6-v2 sentence embeddings → logistic regression over 4 topics.

The embeddings are computed here by the reference implementations (the
`tokenizers` package and onnxruntime running the same ONNX file the
embedding service serves, mean pooling over the attention mask, then L2
normalization, as the model's sentence-transformers modules say), not by
mlmesh. Two versions are written, for the demo's A/B split:

  services/inference/models/topic-classifier/config.pbtxt
  services/inference/models/topic-classifier/{1,2}/model.onnx
      1: LogisticRegression(C=1), 2: LogisticRegression(C=10)
  tests/data/topic-classifier.json
      the held-out texts with their labels and each version's outputs
      computed by onnxruntime on the reference embeddings

Run by a developer after `make models` (scripts/make-topic-classifier.sh
pins the packages); its outputs are committed.
"""
import csv
import json
import os
import sys

import numpy as np
import onnxruntime as ort
from skl2onnx import to_onnx
from sklearn.linear_model import LogisticRegression
from tokenizers import Tokenizer

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
MODEL_DIR = os.environ.get("MLMESH_MINILM", os.path.join(ROOT, ".cache/mlmesh/models/all-MiniLM-L6-v2"))
REPO = os.path.join(ROOT, "services/inference/models/topic-classifier")
REFS = os.path.join(ROOT, "tests/data/topic-classifier.json")
CLASSES = ["sports", "cooking", "technology", "weather"]


def read_rows():
    with open(os.path.join(ROOT, "scripts/demo/topics.tsv"), encoding="utf-8") as f:
        lines = [l for l in f if not l.startswith("#")]
    return list(csv.DictReader(lines, delimiter="\t"))


def embed(texts):
    tok = Tokenizer.from_file(os.path.join(MODEL_DIR, "tokenizer.json"))
    tok.no_padding()
    tok.enable_truncation(256)
    sess = ort.InferenceSession(os.path.join(MODEL_DIR, "model.onnx"), providers=["CPUExecutionProvider"])
    names = {i.name for i in sess.get_inputs()}
    out = []
    for t in texts:
        enc = tok.encode(t)
        ids = np.array([enc.ids], dtype=np.int64)
        mask = np.array([enc.attention_mask], dtype=np.int64)
        feeds = {"input_ids": ids, "attention_mask": mask}
        if "token_type_ids" in names:
            feeds["token_type_ids"] = np.zeros_like(ids)
        hidden = sess.run(None, feeds)[0][0]  # [tokens, 384]
        m = mask[0][:, None].astype(np.float32)
        v = (hidden * m).sum(axis=0) / m.sum()
        out.append(v / np.linalg.norm(v))
    return np.array(out, dtype=np.float32)


def export(clf, version, dim):
    onx = to_onnx(clf, np.zeros((1, dim), dtype=np.float32), options={id(clf): {"zipmap": False}}, target_opset=17)
    onx.graph.input[0].name = "input"
    for node in onx.graph.node:
        node.input[:] = ["input" if i == "X" else i for i in node.input]
    onx.producer_version = "mlmesh"
    path = os.path.join(REPO, str(version), "model.onnx")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(onx.SerializeToString())
    return onx


def main():
    rows = read_rows()
    train = [r for r in rows if r["split"] == "train"]
    test = [r for r in rows if r["split"] == "test"]
    X = embed([r["text"] for r in train])
    y = np.array([CLASSES.index(r["label"]) for r in train])
    Xt = embed([r["text"] for r in test])
    refs = {
        "classes": CLASSES,
        "tolerance": {"fp32_abs": 2e-3},
        "texts": [r["text"] for r in test],
        "labels": [CLASSES.index(r["label"]) for r in test],
        "versions": {},
    }
    for version, c in [(1, 1.0), (2, 10.0)]:
        clf = LogisticRegression(C=c, max_iter=2000).fit(X, y)
        onx = export(clf, version, X.shape[1])
        sess = ort.InferenceSession(onx.SerializeToString(), providers=["CPUExecutionProvider"])
        label, probs = sess.run(["label", "probabilities"], {"input": Xt})
        acc = float((label == np.array(refs["labels"])).mean())
        print(f"version {version}: held-out accuracy {acc:.2f}", file=sys.stderr)
        refs["versions"][str(version)] = {"label": label.tolist(), "probabilities": probs.tolist(), "accuracy": acc}
    with open(os.path.join(REPO, "config.pbtxt"), "w") as f:
        f.write("""name: "topic-classifier"
platform: "onnxruntime_onnx"
max_batch_size: 64
input [ { name: "input" data_type: TYPE_FP32 dims: [ %d ] } ]
output [
  { name: "label" data_type: TYPE_INT64 dims: [ 1 ] reshape: { shape: [ ] } },
  { name: "probabilities" data_type: TYPE_FP32 dims: [ %d ] }
]
version_policy: { all: {} }
dynamic_batching { max_queue_delay_microseconds: 200 }
instance_group [ { count: 1 kind: KIND_CPU } ]
""" % (X.shape[1], len(CLASSES)))
    with open(REFS, "w") as f:
        json.dump(refs, f, indent=1)
        f.write("\n")


if __name__ == "__main__":
    main()
