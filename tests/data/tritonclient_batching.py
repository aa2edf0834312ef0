"""Dynamic batching never changes a result, checked with the official
tritonclient (gRPC) and references from onnxruntime (Python).

Usage: tritonclient_batching.py HOST:PORT MODEL.onnx

Many threads call the `pair-diff` model (diff = a - b + c, sum = a + b + c,
c optional) at once. Each call lists its inputs in a random order, sends c
or not, with 1..3 rows, so the server's dynamic batcher sees requests that
differ in order and in their set of inputs side by side. Every answer must
equal what onnxruntime computes for that caller's own inputs, and no call
may fail. Prints {"calls": n, "failures": [...], "mixed": m} as JSON.
"""
import json
import random
import sys
import threading

import numpy as np
import onnxruntime as ort
import tritonclient.grpc as grpcclient

url, model_path = sys.argv[1], sys.argv[2]
THREADS, CALLS = 16, 25

session = ort.InferenceSession(model_path, providers=["CPUExecutionProvider"])
session_lock = threading.Lock()
failures, lock = [], threading.Lock()
calls = [0]
mixed = [0]


def reference(feeds):
    with session_lock:
        diff, total = session.run(["diff", "sum"], feeds)
    return diff, total


def worker(seed):
    rng = random.Random(seed)
    client = grpcclient.InferenceServerClient(url=url)
    for i in range(CALLS):
        rows = rng.randint(1, 3)
        a = np.asarray(np.random.RandomState(seed * 1000 + i).randn(rows, 4), dtype=np.float32)
        b = np.asarray(np.random.RandomState(seed * 1000 + i + 500).randn(rows, 4) * 10, dtype=np.float32)
        feeds = {"a": a, "b": b}
        with_c = rng.random() < 0.3
        if with_c:
            c = np.full((rows, 4), float(seed), dtype=np.float32)
            feeds["c"] = c
        names = list(feeds)
        rng.shuffle(names)
        inputs = []
        for n in names:
            t = grpcclient.InferInput(n, list(feeds[n].shape), "FP32")
            t.set_data_from_numpy(feeds[n])
            inputs.append(t)
        if names[0] != "a":
            with lock:
                mixed[0] += 1
        try:
            res = client.infer("pair-diff", inputs)
        except Exception as e:  # any failure is a finding
            with lock:
                failures.append(f"seed {seed} call {i} order {names}: {e}")
            continue
        want_d, want_s = reference(feeds)
        got_d, got_s = res.as_numpy("diff"), res.as_numpy("sum")
        ok = (got_d is not None and got_s is not None and got_d.shape == want_d.shape
              and np.allclose(got_d, want_d, atol=1e-5) and np.allclose(got_s, want_s, atol=1e-5))
        with lock:
            calls[0] += 1
            if not ok:
                failures.append(f"seed {seed} call {i} order {names} c={with_c}: "
                                f"got {got_d.tolist() if got_d is not None else None}, "
                                f"onnxruntime {want_d.tolist()}")


threads = [threading.Thread(target=worker, args=(s + 1,)) for s in range(THREADS)]
for t in threads:
    t.start()
for t in threads:
    t.join()
print(json.dumps({"calls": calls[0], "failures": failures[:20], "failed": len(failures), "mixed": mixed[0]}))
sys.exit(1 if failures else 0)
