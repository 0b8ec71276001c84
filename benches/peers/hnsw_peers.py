"""hnswlib and FAISS IndexHNSWFlat on minilm-words, measured the way `omendb bench ann` measures
omendb: M=16, ef_construction=200, build on 2 threads, then each ef timed over the whole query
set in one batched call on 1 thread. Prints the same JSON lines as `omendb bench ann`.
pip install hnswlib faiss-cpu numpy
python benches/peers/hnsw_peers.py ../shared/datasets/minilm-words [hnswlib|faiss ...]"""
import json
import sys
import time

import numpy as np

d = sys.argv[1] if len(sys.argv) > 1 else "../shared/datasets/minilm-words"
systems = sys.argv[2:] or ["hnswlib", "faiss"]
EFS = [10, 16, 24, 32, 48, 64, 96, 128, 192, 256, 400]
base = np.load(f"{d}/base.npy").astype(np.float32)
base /= np.linalg.norm(base, axis=1, keepdims=True)
queries = np.load(f"{d}/queries.npy").astype(np.float32)
gt = np.load(f"{d}/gt_cosine.npy")[:, :10]
n, dim = base.shape


def report(system, ef, hits, secs, build_s):
    recall = np.mean([len(set(h) & set(g)) / 10 for h, g in zip(hits, gt)])
    print(json.dumps({"system": system, "ef": ef, "recall": round(float(recall), 4),
                      "qps": round(len(queries) / secs), "build_s": round(build_s, 1),
                      "n": n, "dim": dim}), flush=True)


if "hnswlib" in systems:
    import hnswlib
    index = hnswlib.Index(space="cosine", dim=dim)
    index.init_index(max_elements=n, M=16, ef_construction=200, random_seed=100)
    t = time.time()
    index.add_items(base, np.arange(n), num_threads=2)
    build_s = time.time() - t
    for ef in EFS:
        index.set_ef(ef)
        t = time.time()
        hits, _ = index.knn_query(queries, k=10, num_threads=1)
        report("hnswlib", ef, hits, time.time() - t, build_s)

if "faiss" in systems:
    import faiss
    faiss.omp_set_num_threads(2)
    index = faiss.IndexHNSWFlat(dim, 16, faiss.METRIC_INNER_PRODUCT)
    index.hnsw.efConstruction = 200
    t = time.time()
    index.add(base)
    build_s = time.time() - t
    faiss.omp_set_num_threads(1)
    for ef in EFS:
        index.hnsw.efSearch = ef
        t = time.time()
        _, hits = index.search(queries, 10)
        report("faiss-hnsw", ef, hits, time.time() - t, build_s)
