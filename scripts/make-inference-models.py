#!/usr/bin/env python3
"""Builds the inference service's demo and test models from scikit-learn's
bundled datasets (no download) and records reference outputs computed by the
reference implementations: onnxruntime (Python) for the ONNX files and
scikit-learn for the estimators the .npz files were cut from.

Run by a developer (scripts/make-inference-models.sh pins the packages);
its results are committed:

  services/inference/models/<model>/[config.pbtxt] <version>/model.{onnx,npz}
  services/inference/tests/data/references.json

The .npz layout is documented in services/inference/README-npz.md.
"""
import json
import os
import sys

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper
from skl2onnx import to_onnx
from sklearn.datasets import load_diabetes, load_digits, load_iris
from sklearn.linear_model import LinearRegression, LogisticRegression
from sklearn.neural_network import MLPClassifier

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
REPO = os.path.join(ROOT, "services/inference/models")
DATA = os.path.join(ROOT, "services/inference/tests/data")


def write(path, data, mode="wb"):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, mode) as f:
        f.write(data)


def save_onnx(model, name, version=1, config=None):
    # A fixed producer version keeps the bytes reproducible across runs.
    write(os.path.join(REPO, name, str(version), "model.onnx"), model.SerializeToString())
    if config is not None:
        write(os.path.join(REPO, name, "config.pbtxt"), config.encode(), "wb")


def save_npz(name, arrays, meta, version=1, config=None):
    path = os.path.join(REPO, name, str(version), "model.npz")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    np.savez(path, meta=json.dumps(meta, sort_keys=True), **arrays)
    if config is not None:
        write(os.path.join(REPO, name, "config.pbtxt"), config.encode(), "wb")


def ort_run(model, feeds):
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    return dict(zip(names, sess.run(None, feeds)))


def tolist(a):
    return np.asarray(a).tolist()


refs = {"tolerance": {"fp32_abs": 1e-4, "fp32_rel": 1e-4}, "models": {}}

# --- iris: multinomial logistic regression (4 features, 3 classes) --------
iris = load_iris()
X, y = iris.data.astype(np.float32), iris.target
rng = np.random.RandomState(0)
idx = rng.permutation(len(X))
train, test = idx[:120], idx[120:]
logreg = LogisticRegression(max_iter=1000).fit(X[train], y[train])
onx = to_onnx(logreg, X[:1], options={id(logreg): {"zipmap": False}}, target_opset=17)
onx.graph.input[0].name = "input"
for node in onx.graph.node:
    node.input[:] = ["input" if i == "X" else i for i in node.input]
save_onnx(onx, "iris-logreg", config="""name: "iris-logreg"
platform: "onnxruntime_onnx"
max_batch_size: 64
input [ { name: "input" data_type: TYPE_FP32 dims: [ 4 ] } ]
output [
  { name: "label" data_type: TYPE_INT64 dims: [ 1 ] reshape: { shape: [ ] } },
  { name: "probabilities" data_type: TYPE_FP32 dims: [ 3 ] }
]
dynamic_batching { max_queue_delay_microseconds: 200 }
instance_group [ { count: 1 kind: KIND_CPU } ]
""")
xt = X[test]
out = ort_run(onx, {"input": xt})
refs["models"]["iris-logreg"] = {
    "input": {"name": "input", "datatype": "FP32", "shape": list(xt.shape), "data": tolist(xt)},
    "onnxruntime": {"label": tolist(out["label"]), "probabilities": tolist(out["probabilities"])},
    "sklearn": {"label": tolist(logreg.predict(xt)), "probabilities": tolist(logreg.predict_proba(xt))},
}
save_npz(
    "iris-logreg-npz",
    {"W0": logreg.coef_.T.astype(np.float32), "b0": logreg.intercept_.astype(np.float32),
     "classes": logreg.classes_.astype(np.int64)},
    {"format": "mlmesh-npz/1", "input": "input", "output_transform": "softmax",
     "outputs": {"probabilities": "probabilities", "label": "label"}},
)
refs["models"]["iris-logreg-npz"] = refs["models"]["iris-logreg"]

# --- digits: a multi-layer perceptron (64 → 32 → 10), the bench model ----
digits = load_digits()
Xd, yd = (digits.data / 16.0).astype(np.float32), digits.target
mlp = MLPClassifier(hidden_layer_sizes=(32,), max_iter=400, random_state=0).fit(Xd[:1500], yd[:1500])
onx = to_onnx(mlp, Xd[:1], options={id(mlp): {"zipmap": False}}, target_opset=17)
onx.graph.input[0].name = "input"
for node in onx.graph.node:
    node.input[:] = ["input" if i == "X" else i for i in node.input]
# No config.pbtxt: everything is derived from the ONNX file.
save_onnx(onx, "digits-mlp")
xt = Xd[1500:1532]
out = ort_run(onx, {"input": xt})
refs["models"]["digits-mlp"] = {
    "input": {"name": "input", "datatype": "FP32", "shape": list(xt.shape), "data": tolist(xt)},
    "onnxruntime": {"label": tolist(out["label"]), "probabilities": tolist(out["probabilities"])},
    "sklearn": {"label": tolist(mlp.predict(xt)), "probabilities": tolist(mlp.predict_proba(xt))},
}
arrays = {}
for i, (w, b) in enumerate(zip(mlp.coefs_, mlp.intercepts_)):
    arrays[f"W{i}"] = w.astype(np.float32)
    arrays[f"b{i}"] = b.astype(np.float32)
arrays["classes"] = mlp.classes_.astype(np.int64)
save_npz(
    "digits-mlp-npz", arrays,
    {"format": "mlmesh-npz/1", "input": "input", "activation": mlp.activation,
     "output_transform": "softmax", "outputs": {"probabilities": "probabilities", "label": "label"}},
    config="""name: "digits-mlp-npz"
backend: "mlmesh_npz"
max_batch_size: 256
dynamic_batching {
  max_queue_delay_microseconds: 0
  default_queue_policy { max_queue_size: 4096 }
}
""",
)
# The same fitted estimator for MLServer (mlserver-sklearn), the benchmark's
# baseline: `mlmesh-bench inference` serves it beside ours.
import joblib
ml_dir = os.path.join(ROOT, "benches/data/mlserver/digits-mlp")
os.makedirs(ml_dir, exist_ok=True)
joblib.dump(mlp, os.path.join(ml_dir, "model.joblib"))
with open(os.path.join(ml_dir, "model-settings.json"), "w") as f:
    json.dump({"name": "digits-mlp", "implementation": "mlserver_sklearn.SKLearnModel",
               "parameters": {"uri": "./model.joblib", "version": "1"}}, f, indent=1)
refs["models"]["digits-mlp-npz"] = {
    "input": refs["models"]["digits-mlp"]["input"],
    "sklearn": refs["models"]["digits-mlp"]["sklearn"],
}

# --- diabetes: linear regression (10 features → 1 value) ------------------
dia = load_diabetes()
Xr, yr = dia.data.astype(np.float32), dia.target
lin = LinearRegression().fit(Xr[:400], yr[:400])
onx = to_onnx(lin, Xr[:1], target_opset=17)
save_onnx(onx, "diabetes-linear")
xt = Xr[400:420]
out = ort_run(onx, {onx.graph.input[0].name: xt})
refs["models"]["diabetes-linear"] = {
    "input": {"name": onx.graph.input[0].name, "datatype": "FP32", "shape": list(xt.shape), "data": tolist(xt)},
    "onnxruntime": {onx.graph.output[0].name: tolist(out[onx.graph.output[0].name])},
    "sklearn": {"variable": tolist(lin.predict(xt).reshape(-1, 1))},
}
save_npz(
    "diabetes-linear-npz",
    {"W0": lin.coef_.reshape(-1, 1).astype(np.float32), "b0": np.array([lin.intercept_], dtype=np.float32)},
    {"format": "mlmesh-npz/1", "input": "input", "output_transform": "identity",
     "outputs": {"values": "variable"}},
)
refs["models"]["diabetes-linear-npz"] = {
    "input": dict(refs["models"]["diabetes-linear"]["input"], name="input"),
    "sklearn": refs["models"]["diabetes-linear"]["sklearn"],
}

# --- echo-types: Identity for every datatype tritonclient can send --------
types = [("BOOL", TensorProto.BOOL, np.bool_), ("INT8", TensorProto.INT8, np.int8),
         ("INT16", TensorProto.INT16, np.int16), ("INT32", TensorProto.INT32, np.int32),
         ("INT64", TensorProto.INT64, np.int64), ("UINT8", TensorProto.UINT8, np.uint8),
         ("UINT16", TensorProto.UINT16, np.uint16), ("UINT32", TensorProto.UINT32, np.uint32),
         ("UINT64", TensorProto.UINT64, np.uint64), ("FP32", TensorProto.FLOAT, np.float32),
         ("FP64", TensorProto.DOUBLE, np.float64), ("BYTES", TensorProto.STRING, np.object_)]
inputs, outputs, nodes = [], [], []
for tname, tp, _ in types:
    inputs.append(helper.make_tensor_value_info(f"IN_{tname}", tp, ["batch", 3]))
    outputs.append(helper.make_tensor_value_info(f"OUT_{tname}", tp, ["batch", 3]))
    nodes.append(helper.make_node("Identity", [f"IN_{tname}"], [f"OUT_{tname}"]))
graph = helper.make_graph(nodes, "echo_types", inputs, outputs)
echo = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="mlmesh")
echo.ir_version = 8
onnx.checker.check_model(echo)
save_onnx(echo, "echo-types")
feeds = {}
for tname, _, np_t in types:
    if tname == "BYTES":
        feeds["IN_BYTES"] = np.array([["a", "bc", ""], ["déjà", "x" * 40, "z"]], dtype=np.object_)
    elif tname == "BOOL":
        feeds["IN_BOOL"] = np.array([[True, False, True], [False, False, True]])
    else:
        info = np.iinfo(np_t) if np.issubdtype(np_t, np.integer) else np.finfo(np_t)
        feeds[f"IN_{tname}"] = np.array([[info.min, 0, 1], [2, 3, info.max]], dtype=np_t)
out = ort_run(echo, feeds)
for tname, _, _ in types:
    assert np.array_equal(out[f"OUT_{tname}"], feeds[f"IN_{tname}"]), tname

# --- pair-diff: two inputs whose order matters, one optional -------------
# diff = a - b + c and sum = a + b + c, with c optional (an initializer the
# caller may override, zeros by default). Served with dynamic batching: the
# scheduler tests send a/b in either order, with and without c, at once, and
# a swap or a mixed batch shows in `diff`.
pa = helper.make_tensor_value_info("a", TensorProto.FLOAT, ["batch", 4])
pb = helper.make_tensor_value_info("b", TensorProto.FLOAT, ["batch", 4])
pc = helper.make_tensor_value_info("c", TensorProto.FLOAT, ["c_rows", 4])
c_default = helper.make_tensor("c", TensorProto.FLOAT, [1, 4], [0.0] * 4)
pair_nodes = [
    helper.make_node("Sub", ["a", "b"], ["a_minus_b"]),
    helper.make_node("Add", ["a_minus_b", "c"], ["diff"]),
    helper.make_node("Add", ["a", "b"], ["a_plus_b"]),
    helper.make_node("Add", ["a_plus_b", "c"], ["sum"]),
]
pair_graph = helper.make_graph(
    pair_nodes, "pair_diff", [pa, pb, pc],
    [helper.make_tensor_value_info("diff", TensorProto.FLOAT, ["batch", 4]),
     helper.make_tensor_value_info("sum", TensorProto.FLOAT, ["batch", 4])],
    initializer=[c_default])
pair = helper.make_model(pair_graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="mlmesh")
pair.ir_version = 8
onnx.checker.check_model(pair)
save_onnx(pair, "pair-diff", config="""name: "pair-diff"
platform: "onnxruntime_onnx"
max_batch_size: 64
input [
  { name: "a" data_type: TYPE_FP32 dims: [ 4 ] },
  { name: "b" data_type: TYPE_FP32 dims: [ 4 ] },
  { name: "c" data_type: TYPE_FP32 dims: [ 4 ] optional: true }
]
output [
  { name: "diff" data_type: TYPE_FP32 dims: [ 4 ] },
  { name: "sum" data_type: TYPE_FP32 dims: [ 4 ] }
]
dynamic_batching { max_queue_delay_microseconds: 5000 }
instance_group [ { count: 1 kind: KIND_CPU } ]
""")
pr = np.arange(8, dtype=np.float32).reshape(2, 4)
out = ort_run(pair, {"a": pr, "b": pr * 3})
assert np.array_equal(out["diff"], pr - pr * 3)

# A second version of digits-mlp-npz with different weights, for the reload
# tests (the test copies it in as version 2 while the model serves).
arrays2 = {k: (v * 0.5 if k.startswith("W") else v) for k, v in arrays.items()}
path = os.path.join(DATA, "digits-mlp-npz-v2.npz")
np.savez(path, meta=json.dumps({"format": "mlmesh-npz/1", "input": "input", "activation": mlp.activation,
                                "output_transform": "softmax",
                                "outputs": {"probabilities": "probabilities", "label": "label"}}, sort_keys=True),
         **arrays2)
# Its reference: the same MLP with halved weights, computed by numpy in float64.
h = Xd[1500:1532].astype(np.float64)
for i in range(len(mlp.coefs_)):
    h = h @ (mlp.coefs_[i] * 0.5) + mlp.intercepts_[i]
    if i < len(mlp.coefs_) - 1:
        h = np.maximum(h, 0)
e = np.exp(h - h.max(axis=1, keepdims=True))
refs["models"]["digits-mlp-npz-v2"] = {"numpy": {"probabilities": tolist(e / e.sum(axis=1, keepdims=True))}}

# --- MiniLM (from `make models`) served as a plain ONNX model -------------
# INT64 token ids in, a 3-D float tensor out; reference by onnxruntime on the
# same file, for fixed token ids ("hello world", and a padded shorter row).
minilm = os.path.join(ROOT, ".cache/mlmesh/models/all-MiniLM-L6-v2/model.onnx")
if os.path.isfile(minilm):
    sess = ort.InferenceSession(minilm, providers=["CPUExecutionProvider"])
    ids = np.array([[101, 7592, 2088, 102], [101, 2088, 102, 0]], dtype=np.int64)
    feeds = {"input_ids": ids, "attention_mask": (ids != 0).astype(np.int64),
             "token_type_ids": np.zeros_like(ids)}
    feeds = {k: v for k, v in feeds.items() if k in {i.name for i in sess.get_inputs()}}
    outs = sess.run(None, feeds)
    refs["models"]["all-MiniLM-L6-v2"] = {
        "inputs": {k: tolist(v) for k, v in feeds.items()},
        "output_name": sess.get_outputs()[0].name,
        "onnxruntime": tolist(outs[0]),
        "onnxruntime_version": ort.__version__,
    }
else:
    sys.exit("run `make models` first: the MiniLM reference needs " + minilm)

with open(os.path.join(DATA, "references.json"), "w") as f:
    json.dump(refs, f, indent=1, sort_keys=True)
print("models written to", REPO, file=sys.stderr)
