#!/usr/bin/env python3
"""faiss, in process: the peer `mlmesh-bench vector-peers` measures the
vector-search service against, and the reference for exact answers.

Vectors are raw little-endian float32 files, `dim` values per vector, unit
length (so inner product is cosine). Every command prints one JSON object.

    faiss_peer.py truth  --data D --queries Q --dim N --k 10 --out T
        exact top-k of every query by IndexFlatIP; T: int64 ids, k per query
    faiss_peer.py build  --data D --dim N --m 16 --ef-construction 100 --index I
        HNSW (IndexHNSWFlat, inner product) built on every core, written to I
    faiss_peer.py search --index I --queries Q --dim N --k 10 --ef E
                         --clients C --seconds S [--batch B] [--answers A]
        C threads, each searching B queries per call (default 1; one OpenMP
        thread per call, faiss releases the GIL while searching) for S
        seconds; A: the ids each query gets once, for recall
"""

import argparse
import json
import threading
import time

import faiss
import numpy as np


def rss_kib():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def load(path, dim):
    v = np.fromfile(path, dtype="<f4")
    if v.size % dim:
        raise SystemExit(f"{path}: {v.size} floats is not a multiple of --dim {dim}")
    return v.reshape(-1, dim)


def truth(a):
    data, queries = load(a.data, a.dim), load(a.queries, a.dim)
    index = faiss.IndexFlatIP(a.dim)
    index.add(data)
    t0 = time.perf_counter()
    _, ids = index.search(queries, a.k)
    ids.astype("<i8").tofile(a.out)
    return {"queries": len(queries), "secs": time.perf_counter() - t0}


def build(a):
    data = load(a.data, a.dim)
    index = faiss.IndexHNSWFlat(a.dim, a.m, faiss.METRIC_INNER_PRODUCT)
    index.hnsw.efConstruction = a.ef_construction
    t0 = time.perf_counter()
    index.add(data)
    secs = time.perf_counter() - t0
    faiss.write_index(index, a.index)
    return {"vectors": index.ntotal, "build_secs": secs, "threads": faiss.omp_get_max_threads()}


def search(a):
    before = rss_kib()
    index = faiss.read_index(a.index)
    loaded = rss_kib() - before
    queries = load(a.queries, a.dim)
    index.hnsw.efSearch = a.ef
    faiss.omp_set_num_threads(1)
    out = {"ef": a.ef, "clients": a.clients, "index_kib": loaded}
    if a.answers:
        _, ids = index.search(queries, a.k)
        ids.astype("<i8").tofile(a.answers)
    b = max(1, a.batch)
    # Consecutive queries, wrapping round, `b` per call.
    wrapped = np.concatenate([queries, queries[:b]])
    rows = [wrapped[i : i + b] for i in range(len(queries))]
    lat = [[] for _ in range(a.clients)]
    start = threading.Barrier(a.clients + 1)
    deadline = [0.0]

    def client(c):
        mine, i = lat[c], c * 31
        start.wait()
        while time.perf_counter() < deadline[0]:
            q = rows[i % len(rows)]
            t = time.perf_counter()
            index.search(q, a.k)
            mine.append(time.perf_counter() - t)
            i += 1

    threads = [threading.Thread(target=client, args=(c,)) for c in range(a.clients)]
    for t in threads:
        t.start()
    t0 = time.perf_counter()
    deadline[0] = t0 + a.seconds
    start.wait()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    every = sorted(x for mine in lat for x in mine)
    n = len(every)
    out.update(
        calls=n,
        batch=b,
        qps=n * b / wall,
        p50_ms=every[n // 2] * 1e3 if n else 0.0,
        p99_ms=every[min(n - 1, n * 99 // 100)] * 1e3 if n else 0.0,
        rss_kib=rss_kib(),
    )
    return out


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    for name in ("truth", "build", "search"):
        s = sub.add_parser(name)
        s.add_argument("--dim", type=int, required=True)
        s.add_argument("--k", type=int, default=10)
        if name in ("truth", "build"):
            s.add_argument("--data", required=True)
        if name in ("truth", "search"):
            s.add_argument("--queries", required=True)
        if name == "truth":
            s.add_argument("--out", required=True)
        if name == "build":
            s.add_argument("--m", type=int, default=16)
            s.add_argument("--ef-construction", type=int, default=100)
        if name in ("build", "search"):
            s.add_argument("--index", required=True)
        if name == "search":
            s.add_argument("--ef", type=int, required=True)
            s.add_argument("--clients", type=int, default=1)
            s.add_argument("--seconds", type=float, default=2.0)
            s.add_argument("--batch", type=int, default=1)
            s.add_argument("--answers")
    a = p.parse_args()
    result = {"truth": truth, "build": build, "search": search}[a.cmd](a)
    result["faiss"] = faiss.__version__
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
