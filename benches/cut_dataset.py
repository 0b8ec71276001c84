"""The first N rows of a dataset laid out as `omendb bench ann` reads it (base.npy,
queries.npy, gt_cosine.npy), with the exact top-100 by cosine recomputed over those rows: a
smaller cut with the same queries, to see how the indexes compare as the collection grows.
numpy only.

  python benches/cut_dataset.py /tmp/phrases /tmp/p500k 500000
"""
import pathlib
import sys

import numpy as np

from ground_truth import exact_top100


def main():
    src, out, n = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2]), int(sys.argv[3])
    out.mkdir(parents=True, exist_ok=True)
    base = np.load(src / "base.npy", mmap_mode="r")[:n]
    queries = np.load(src / "queries.npy")
    np.save(out / "base.npy", np.ascontiguousarray(base))
    np.save(out / "queries.npy", queries)
    np.save(out / "gt_cosine.npy", exact_top100(queries, base))
    print("wrote", out, base.shape)


if __name__ == "__main__":
    main()
