#!/usr/bin/env python3
"""A broken iris model for the validator's tests: the logistic regression
of scripts/make-inference-models.py, preceded by "centre each feature on
the batch's mean, then add the training mean back" — the bug of a
normalisation layer exported in training mode. Alone, every row becomes
the training mean (one class for every flower); in a batch, rows depend on
each other. The validator must fail it on accuracy and on robustness (a
batch differs from the same rows one by one) without anything crashing.

    PYTHONPATH=.cache/mlmesh/py/modelgen python3 scripts/make-broken-model.py

Writes tests/data/validation/iris-batch-dependent/ (same signature and
config as iris-tree: no name, so the registry model's is taken).
"""

import os

import numpy as np
import onnx
from onnx import helper, numpy_helper
from skl2onnx import to_onnx
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression

ROOT = os.path.join(os.path.dirname(__file__), "..")
OUT = os.path.join(ROOT, "tests", "data", "validation", "iris-batch-dependent")

iris = load_iris()
X, y = iris.data.astype(np.float32), iris.target
rng = np.random.RandomState(0)
idx = rng.permutation(len(X))
train = idx[:120]
logreg = LogisticRegression(max_iter=1000).fit(X[train], y[train])

onx = to_onnx(logreg, X[:1], options={id(logreg): {"zipmap": False}}, target_opset=17)
g = onx.graph
# Rename the graph input to `input` and feed the model from `centred`.
old = g.input[0].name
for node in g.node:
    node.input[:] = ["centred" if i == old else i for i in node.input]
g.input[0].name = "input"
mean = numpy_helper.from_array(X[train].mean(axis=0, keepdims=True).astype(np.float32), "train_mean")
g.initializer.extend([mean])
pre = [
    # Opset 17: the axes are an attribute.
    helper.make_node("ReduceMean", ["input"], ["batch_mean"], axes=[0], keepdims=1),
    helper.make_node("Sub", ["input", "batch_mean"], ["deviation"]),
    helper.make_node("Add", ["deviation", "train_mean"], ["centred"]),
]
nodes = pre + list(g.node)
del g.node[:]
g.node.extend(nodes)
onnx.checker.check_model(onx)
os.makedirs(os.path.join(OUT, "1"), exist_ok=True)
onnx.save(onx, os.path.join(OUT, "1", "model.onnx"))
with open(os.path.join(OUT, "config.pbtxt"), "w") as f:
    f.write("""platform: "onnxruntime_onnx"
max_batch_size: 64
input [ { name: "input" data_type: TYPE_FP32 dims: [ 4 ] } ]
output [
  { name: "label" data_type: TYPE_INT64 dims: [ 1 ] reshape: { shape: [ ] } },
  { name: "probabilities" data_type: TYPE_FP32 dims: [ 3 ] }
]
""")

# What onnxruntime itself answers: one row at a time vs a batch of 8.
import onnxruntime as ort  # noqa: E402

s = ort.InferenceSession(os.path.join(OUT, "1", "model.onnx"))
single = np.concatenate([s.run(None, {"input": X[i : i + 1]})[1] for i in range(8)])
batch = s.run(None, {"input": X[:8]})[1]
print("max |batch - single| over the first 8 rows:", float(np.abs(batch - single).max()))
print("accuracy one by one:", float((np.concatenate([s.run(None, {"input": X[i : i + 1]})[0] for i in range(len(X))]).ravel() == y).mean()))
