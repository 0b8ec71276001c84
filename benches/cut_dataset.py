"""The first N rows of a dataset laid out as `omendb bench ann` reads it (base.npy,
queries.npy, gt_cosine.npy), with the exact top-100 by cosine recomputed over those rows: a
smaller cut with the same queries, to see how the indexes compare as the collection grows.
numpy only.

  python benches/cut_dataset.py /tmp/phrases /tmp/p500k 500000
"""
import pathlib
import sys

import numpy as np


def main():
    src, out, n = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2]), int(sys.argv[3])
    out.mkdir(parents=True, exist_ok=True)
    base = np.load(src / "base.npy", mmap_mode="r")[:n]
    queries = np.load(src / "queries.npy")
    np.save(out / "base.npy", np.ascontiguousarray(base))
    np.save(out / "queries.npy", queries)
    qn = queries / np.linalg.norm(queries, axis=1, keepdims=True)
    best_s = np.full((len(qn), 100), -np.inf, dtype=np.float32)
    best_i = np.zeros((len(qn), 100), dtype=np.int64)
    for s in range(0, len(base), 65_536):
        b = base[s:s + 65_536].astype(np.float32)
        b /= np.linalg.norm(b, axis=1, keepdims=True)
        sims = np.concatenate([best_s, qn @ b.T], axis=1)
        ids = np.concatenate([best_i, np.broadcast_to(np.arange(s, s + len(b)), (len(qn), len(b)))], axis=1)
        top = np.argpartition(-sims, 100, axis=1)[:, :100]
        best_s, best_i = np.take_along_axis(sims, top, axis=1), np.take_along_axis(ids, top, axis=1)
    order = np.argsort(-best_s, axis=1, kind="stable")
    np.save(out / "gt_cosine.npy", np.take_along_axis(best_i, order, axis=1).astype(np.int32))
    print("wrote", out, base.shape)


if __name__ == "__main__":
    main()
