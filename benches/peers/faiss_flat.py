"""FAISS IndexFlatIP on minilm-words, measured the same way as `cargo bench --bench engine`:
1,000 queries one at a time and as one batch, on 1 and 2 threads (the best of 3 passes each,
as the engine bench does), plus build (add) rate.
pip install faiss-cpu numpy; python benches/peers/faiss_flat.py ../shared/datasets/minilm-words"""
import json
import sys
import time

import faiss
import numpy as np

d = sys.argv[1] if len(sys.argv) > 1 else "../shared/datasets/minilm-words"
base = np.load(f"{d}/base.npy").astype(np.float32)
base /= np.linalg.norm(base, axis=1, keepdims=True)
queries = np.load(f"{d}/queries.npy").astype(np.float32)
gt = np.load(f"{d}/gt_cosine.npy")[:, :10]
t = time.time()
index = faiss.IndexFlatIP(base.shape[1])
index.add(base)
print(json.dumps({"system": "faiss-flat-ip", "bench": "add", "rows_per_s": round(len(base) / (time.time() - t))}))
for threads in (1, 2):
    faiss.omp_set_num_threads(threads)
    index.search(queries[:1], 10)
    qps = 0
    for _ in range(3):
        t = time.time()
        hits = np.vstack([index.search(queries[i:i + 1], 10)[1] for i in range(len(queries))])
        qps = max(qps, len(queries) / (time.time() - t))
    recall = np.mean([len(set(h) & set(g)) / 10 for h, g in zip(hits, gt)])
    print(json.dumps({"system": "faiss-flat-ip", "bench": "flat_single", "threads": threads, "qps": round(qps, 1), "recall": recall}))
    qps = 0
    for _ in range(3):
        t = time.time()
        _, hits = index.search(queries, 10)
        qps = max(qps, len(queries) / (time.time() - t))
    recall = np.mean([len(set(h) & set(g)) / 10 for h, g in zip(hits, gt)])
    print(json.dumps({"system": "faiss-flat-ip", "bench": "flat_batched", "threads": threads, "qps": round(qps, 1), "recall": recall}))
