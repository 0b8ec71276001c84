"""A 1,000,000-row stand-in built from minilm-words, for scale runs where minilm-phrases (which
needs torch) cannot be built: every base row and 9 copies jittered by Gaussian noise of sigma
0.02 per dimension and renormalized (the recipe of minilm-phrases' SCALE=10), float16, the same
queries, and their exact top-100 by cosine. SCALE=100 makes the 10,000,000-row stand-in (each
row and 99 jittered copies; 7.7 GB, about 10 minutes).

    python benches/make_words_x10.py ../shared/datasets/minilm-words OUT_DIR    # about 2 minutes
    SCALE=100 python benches/make_words_x10.py ../shared/datasets/minilm-words OUT_DIR
    omendb bench ann --dataset OUT_DIR --index ivf --quantization rabitq1 --nprobe 32,64,128,256 --ef 32
"""
import os
import pathlib
import sys

import numpy as np

from ground_truth import exact_top100

src, out = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
out.mkdir(parents=True, exist_ok=True)
K = int(os.environ.get("SCALE", 10))
base = np.load(src / "base.npy").astype(np.float32)
base /= np.linalg.norm(base, axis=1, keepdims=True)
queries = np.load(src / "queries.npy").astype(np.float32)
rng = np.random.default_rng(11)
big = np.empty((len(base) * K, base.shape[1]), dtype=np.float16)
for j in range(K):
    b = base if j == 0 else base + rng.normal(0, 0.02, base.shape).astype(np.float32)
    b /= np.linalg.norm(b, axis=1, keepdims=True)
    big[j::K] = b.astype(np.float16)
np.save(out / "base.npy", big)
print("base written", flush=True)
np.save(out / "queries.npy", queries)
np.save(out / "gt_cosine.npy", exact_top100(queries, big))
print("wrote", out, big.shape)
