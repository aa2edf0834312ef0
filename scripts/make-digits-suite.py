#!/usr/bin/env python3
"""Writes tests/data/validation/digits-suite.json: scikit-learn's digits
(scaled by 1/16, as digits-mlp was trained) as a validation suite — every
image of load_digits() from index 1500 on (digits-mlp was trained on the
first 1500), its label from the dataset.
The quantizer calibrates on it and judges agreement with fp32 on it.

Run with the pinned model-generation packages:
  PYTHONPATH=.cache/mlmesh/py/modelgen python3 scripts/make-digits-suite.py
"""
import json
import os

import numpy as np
from sklearn.datasets import load_digits

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
d = load_digits()
X = (d.data / 16.0).astype(np.float32)
examples = [
    {"inputs": {"input": {"datatype": "FP32", "shape": [1, 64], "data": [float(v) for v in X[i]]}},
     "label": int(d.target[i])}
    for i in range(1500, len(X))
]
suite = {
    "name": "digits-accuracy",
    "signature": {
        "inputs": [{"name": "input", "datatype": "FP32", "shape": [-1, 64]}],
        "outputs": [{"name": "label", "datatype": "INT64", "shape": [-1]},
                    {"name": "probabilities", "datatype": "FP32", "shape": [-1, 10]}],
    },
    "examples": examples,
    "checks": [{"kind": "accuracy", "output": "probabilities", "min": 0.9, "margin": 0.02}],
}
with open(os.path.join(ROOT, "tests/data/validation/digits-suite.json"), "w") as f:
    json.dump(suite, f, separators=(",", ":"))
print(len(examples), "examples")
