#!/usr/bin/env python3
"""The iris validation suite and a deliberately worse iris model for the
validator's cross-process test (tests/tests/cross/validate.rs):

- tests/data/validation/iris-tree/: a depth-1 decision tree with the
  signature of services/inference/models/iris-logreg (input FP32 [4];
  label INT64, probabilities FP32 [3]), trained on the same 120 rows;
- tests/data/validation/iris-suite.json: every iris row as an example
  (input and label), an accuracy check (at least 0.9, not worse than the
  champion by more than 0.02);
- tests/data/validation/iris-expected.json: scikit-learn's accuracy of
  both models on those rows (the references; never our code's).

    PYTHONPATH=.cache/mlmesh/py/modelgen python3 scripts/make-validation-suite.py
"""

import json
import os

import numpy as np
import onnx
from skl2onnx import to_onnx
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score
from sklearn.tree import DecisionTreeClassifier

ROOT = os.path.join(os.path.dirname(__file__), "..")
OUT = os.path.join(ROOT, "tests", "data", "validation")

iris = load_iris()
X, y = iris.data.astype(np.float32), iris.target
rng = np.random.RandomState(0)
idx = rng.permutation(len(X))
train = idx[:120]
# The same fit as scripts/make-inference-models.py's iris-logreg.
logreg = LogisticRegression(max_iter=1000).fit(X[train], y[train])
tree = DecisionTreeClassifier(max_depth=1, random_state=0).fit(X[train], y[train])

onx = to_onnx(tree, X[:1], options={id(tree): {"zipmap": False}}, target_opset=17)
onx.graph.input[0].name = "input"
for node in onx.graph.node:
    node.input[:] = ["input" if i == "X" else i for i in node.input]
os.makedirs(os.path.join(OUT, "iris-tree", "1"), exist_ok=True)
onnx.save(onx, os.path.join(OUT, "iris-tree", "1", "model.onnx"))
with open(os.path.join(OUT, "iris-tree", "config.pbtxt"), "w") as f:
    # No name: the folder's (the registry model's) is taken.
    f.write("""platform: "onnxruntime_onnx"
max_batch_size: 64
input [ { name: "input" data_type: TYPE_FP32 dims: [ 4 ] } ]
output [
  { name: "label" data_type: TYPE_INT64 dims: [ 1 ] reshape: { shape: [ ] } },
  { name: "probabilities" data_type: TYPE_FP32 dims: [ 3 ] }
]
""")

suite = {
    "name": "iris-accuracy",
    "signature": {
        "inputs": [{"name": "input", "datatype": "FP32", "shape": [-1, 4]}],
        "outputs": [
            {"name": "label", "datatype": "INT64", "shape": [-1, 1]},
            {"name": "probabilities", "datatype": "FP32", "shape": [-1, 3]},
        ],
    },
    "examples": [
        {"inputs": {"input": {"datatype": "FP32", "shape": [1, 4], "data": [float(v) for v in row]}},
         "label": int(label)}
        for row, label in zip(X, y)
    ],
    "checks": [{"kind": "accuracy", "output": "probabilities", "min": 0.9, "margin": 0.02}],
    "bootstrap": {"resamples": 2000, "confidence": 0.95, "seed": 1},
}
with open(os.path.join(OUT, "iris-suite.json"), "w") as f:
    json.dump(suite, f)
    f.write("\n")
with open(os.path.join(OUT, "iris-expected.json"), "w") as f:
    json.dump({
        "logreg_accuracy": float(accuracy_score(y, logreg.predict(X))),
        "tree_accuracy": float(accuracy_score(y, tree.predict(X))),
        "examples": int(len(y)),
    }, f, indent=1)
    f.write("\n")
print("accuracy logreg", accuracy_score(y, logreg.predict(X)), "tree", accuracy_score(y, tree.predict(X)))
