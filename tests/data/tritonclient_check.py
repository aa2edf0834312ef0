"""The official tritonclient (gRPC), unchanged, against mlmesh-inference.

Usage: tritonclient_check.py HOST:PORT REFERENCES.json

Every check compares what the service answers with references computed by
onnxruntime (Python) and scikit-learn when the models were built
(scripts/make-inference-models.py), never with the service's own earlier
answers. Prints one JSON object: {"checks": [names...], "failures": [...]}
and exits non-zero when a check failed.
"""
import json
import queue
import sys
import threading

import numpy as np
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

url, refs_path = sys.argv[1], sys.argv[2]
refs = json.load(open(refs_path))
TOL = refs["tolerance"]
client = grpcclient.InferenceServerClient(url=url)
checks, failures = [], []


def check(name, cond, detail=""):
    checks.append(name)
    if not cond:
        failures.append(f"{name}: {detail}")


def close(a, b):
    return np.allclose(np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64),
                       atol=TOL["fp32_abs"], rtol=TOL["fp32_rel"])


def expect_error(name, fn, code, words=()):
    try:
        fn()
    except InferenceServerException as e:
        status = e.status() or ""
        msg = e.message() or ""
        ok = code in status and all(w in msg for w in words)
        check(name, ok, f"got {status} {msg!r}")
        return
    check(name, False, "no error raised")


def infer_input(name, arr, datatype):
    i = grpcclient.InferInput(name, list(arr.shape), datatype)
    i.set_data_from_numpy(arr)
    return i


# --- server and model metadata -------------------------------------------
check("server_live", client.is_server_live())
check("server_ready", client.is_server_ready())
meta = client.get_server_metadata(as_json=True)
check("server_metadata", meta["name"] == "mlmesh-inference" and "model_repository" in meta["extensions"]
      and "system_shared_memory" not in meta["extensions"], meta)
check("model_ready", client.is_model_ready("iris-logreg"))
check("model_ready_unknown_is_false", client.is_model_ready("no-such-model") is False)
md = client.get_model_metadata("digits-mlp", as_json=True)
check("model_metadata", md["inputs"][0]["name"] == "input" and md["inputs"][0]["shape"] == ["-1", "64"]
      and md["platform"] == "onnxruntime_onnx", md)
cfg = client.get_model_config("iris-logreg", as_json=True)["config"]
check("model_config", cfg["max_batch_size"] == 64 and cfg["input"][0]["data_type"] == "TYPE_FP32"
      and "dynamic_batching" in cfg, cfg)
cfg = client.get_model_config("digits-mlp", as_json=True)["config"]
check("model_config_derived_from_onnx", cfg["input"][0]["dims"] == ["64"] and cfg["platform"] == "onnxruntime_onnx", cfg)

# --- infer against the references ----------------------------------------
for model, key in [("iris-logreg", "onnxruntime"), ("iris-logreg-npz", "sklearn"),
                   ("digits-mlp", "onnxruntime"), ("digits-mlp-npz", "sklearn")]:
    r = refs["models"][model]
    x = np.array(r["input"]["data"], dtype=np.float32)
    res = client.infer(model, [infer_input(r["input"]["name"], x, "FP32")],
                       outputs=[grpcclient.InferRequestedOutput("probabilities"),
                                grpcclient.InferRequestedOutput("label")])
    probs = res.as_numpy("probabilities")
    label = res.as_numpy("label").reshape(-1)
    check(f"infer_{model}_probabilities", close(probs, r[key]["probabilities"]), model)
    check(f"infer_{model}_label", label.tolist() == r[key]["label"], f"{label} vs {r[key]['label']}")
    # And against scikit-learn itself for the ONNX export.
    check(f"infer_{model}_matches_sklearn", close(probs, r["sklearn"]["probabilities"]), model)

for model in ["diabetes-linear", "diabetes-linear-npz"]:
    r = refs["models"][model]
    x = np.array(r["input"]["data"], dtype=np.float32)
    res = client.infer(model, [infer_input(r["input"]["name"], x, "FP32")])
    out = res.as_numpy("variable")
    check(f"infer_{model}", out is not None and close(out, r["sklearn"]["variable"]), model)

# --- every datatype, BYTES included, through ONNX Runtime's Identity ------
feeds = {
    "BOOL": np.array([[True, False, True], [False, False, True]]),
    "BYTES": np.array([[b"a", b"bc", b""], ["déjà".encode(), b"x" * 40, b"z"]], dtype=np.object_),
}
for t, np_t in [("INT8", np.int8), ("INT16", np.int16), ("INT32", np.int32), ("INT64", np.int64),
                ("UINT8", np.uint8), ("UINT16", np.uint16), ("UINT32", np.uint32), ("UINT64", np.uint64),
                ("FP32", np.float32), ("FP64", np.float64)]:
    info = np.iinfo(np_t) if np.issubdtype(np_t, np.integer) else np.finfo(np_t)
    feeds[t] = np.array([[info.min, 0, 1], [2, 3, info.max]], dtype=np_t)
res = client.infer("echo-types", [infer_input(f"IN_{t}", a, t) for t, a in feeds.items()])
for t, a in feeds.items():
    got = res.as_numpy(f"OUT_{t}")
    check(f"datatype_{t}", got is not None and got.shape == a.shape and (got == a).all(), f"{got!r}")

# --- compression as tritonclient sends it ---------------------------------
r = refs["models"]["iris-logreg"]
x = np.array(r["input"]["data"], dtype=np.float32)
for algo in ["gzip", "deflate"]:
    res = client.infer("iris-logreg", [infer_input("input", x, "FP32")], compression_algorithm=algo)
    check(f"compression_{algo}", close(res.as_numpy("probabilities"), r["onnxruntime"]["probabilities"]))

# --- async infer ------------------------------------------------------------
done = queue.Queue()
client.async_infer("iris-logreg", [infer_input("input", x, "FP32")],
                   callback=lambda result, error: done.put((result, error)))
result, error = done.get(timeout=30)
check("async_infer", error is None and close(result.as_numpy("probabilities"), r["onnxruntime"]["probabilities"]),
      str(error))

# --- stream infer with a failing request in the middle --------------------
got = queue.Queue()
client.start_stream(callback=lambda result, error: got.put((result, error)))
client.async_stream_infer("iris-logreg", [infer_input("input", x[:2], "FP32")], request_id="a")
client.async_stream_infer("iris-logreg", [infer_input("input", x[:2].astype(np.float64), "FP64")], request_id="b")
client.async_stream_infer("iris-logreg", [infer_input("input", x[2:5], "FP32")], request_id="c")
answers = [got.get(timeout=30) for _ in range(3)]
client.stop_stream()
ok = [a for a in answers if a[1] is None]
bad = [a for a in answers if a[1] is not None]
check("stream_two_answers", len(ok) == 2 and {a[0].get_response().id for a in ok} == {"a", "c"},
      str([(a[0].get_response().id if a[0] else None, str(a[1])) for a in answers]))
check("stream_error_names_datatype", len(bad) == 1 and "FP64" in str(bad[0][1]) and "FP32" in str(bad[0][1]),
      str(bad))
for a in ok:
    if a[0].get_response().id == "c":
        check("stream_result", close(a[0].as_numpy("probabilities"), r["onnxruntime"]["probabilities"][2:5]))

# --- repository: index, unload, load ----------------------------------------
index = client.get_model_repository_index(as_json=True)["models"]
names = {m["name"] for m in index}
check("repository_index", {"iris-logreg", "digits-mlp", "echo-types"} <= names
      and all(m.get("state") == "READY" for m in index if m["name"] == "iris-logreg"), index)
client.unload_model("iris-logreg-npz")
check("unload_then_not_ready", client.is_model_ready("iris-logreg-npz") is False)
index = {m["name"]: m for m in client.get_model_repository_index(as_json=True)["models"]}
check("index_shows_unavailable", index["iris-logreg-npz"].get("state") == "UNAVAILABLE", index["iris-logreg-npz"])
client.load_model("iris-logreg-npz")
check("load_then_ready", client.is_model_ready("iris-logreg-npz"))
stats = client.get_inference_statistics("iris-logreg", as_json=True)["model_stats"][0]
check("statistics", int(stats["inference_count"]) >= 2 * len(x) and int(stats["execution_count"]) >= 2, stats)

# --- errors -------------------------------------------------------------------
expect_error("unknown_model_not_found", lambda: client.infer("no-such-model", [infer_input("input", x, "FP32")]),
             "NOT_FOUND", ["no-such-model", "iris-logreg"])
expect_error("unknown_version_not_found", lambda: client.infer("iris-logreg", [infer_input("input", x, "FP32")],
                                                              model_version="7"), "NOT_FOUND", ["7", "1"])
expect_error("wrong_datatype", lambda: client.infer("iris-logreg", [infer_input("input", x.astype(np.float64), "FP64")]),
             "INVALID_ARGUMENT", ["input", "FP64", "FP32"])
expect_error("wrong_shape", lambda: client.infer("iris-logreg", [infer_input("input", x[:, :3].copy(), "FP32")]),
             "INVALID_ARGUMENT", ["input", "[30, 3]", "[-1, 4]"])
expect_error("unknown_input", lambda: client.infer("iris-logreg", [infer_input("nope", x, "FP32")]),
             "INVALID_ARGUMENT", ["nope", "input"])
expect_error("unknown_output", lambda: client.infer("iris-logreg", [infer_input("input", x, "FP32")],
                                                    outputs=[grpcclient.InferRequestedOutput("nope")]),
             "INVALID_ARGUMENT", ["nope"])
bad_len = grpcclient.InferInput("input", [2, 4], "FP32")
bad_len.set_data_from_numpy(x[:2])
bad_len._get_tensor().shape[:] = [3, 4]
expect_error("byte_length_mismatch", lambda: client.infer("iris-logreg", [bad_len]),
             "INVALID_ARGUMENT", ["input", "32 bytes", "48"])
expect_error("unload_unknown_not_found", lambda: client.unload_model("no-such-model"), "NOT_FOUND", ["no-such-model"])

print(json.dumps({"checks": checks, "failures": failures}))
sys.exit(1 if failures else 0)
