"""How well k-means lists hold each query's true neighbours, with and without a second list per
row: the fraction of the true top-10 lying in the `nprobe` lists nearest the query (codes and
re-ranking left out, so this bounds any IVF over these lists), and the fraction of entries
those lists hold. Compares one list per row (OmenDB's IVF today), a second list chosen by SOAR
(the nearest centroid by |x - c|^2 + lambda * <r, x - c>^2 / |r|^2, r the row's residual from
its first centroid, as ScaNN spills) and the plain second-nearest centroid. numpy only; a
dataset laid out as `omendb bench ann` reads it. One JSON line per nprobe and scheme.

  python benches/ivf_partition_recall.py /tmp/phrases
Environment: LISTS (default 1000), SAMPLE (k-means training rows, default 200000),
ROUNDS (default 8), LAMBDA (default 1.0), NPROBE (default 10,20,30,50,80,120,200).
"""
import json
import os
import sys

import numpy as np

BLOCK = 50_000
CANDIDATES = 16


def normalized(a):
    a = a.astype(np.float32)
    return a / np.linalg.norm(a, axis=1, keepdims=True)


def kmeans(data, lists, rounds, rng):
    centroids = data[rng.choice(len(data), lists, replace=False)].copy()
    for _ in range(rounds):
        owner = np.concatenate([
            ((centroids**2).sum(1)[None, :] - 2 * data[s:s + BLOCK] @ centroids.T).argmin(1)
            for s in range(0, len(data), BLOCK)
        ])
        for c in range(lists):
            members = data[owner == c]
            if len(members):
                centroids[c] = members.mean(0)
    return centroids


def assign(base, centroids, lam):
    """Each row's nearest centroid, its SOAR second centroid and its second-nearest one."""
    c2 = (centroids**2).sum(1)
    first, soar, second = (np.empty(len(base), np.int64) for _ in range(3))
    for s in range(0, len(base), BLOCK):
        x = base[s:s + BLOCK]
        d = c2[None, :] - 2 * x @ centroids.T
        near = np.argpartition(d, CANDIDATES, axis=1)[:, :CANDIDATES]
        rows = np.arange(len(x))
        p = near[rows, np.take_along_axis(d, near, 1).argmin(1)]
        r = x - centroids[p]
        diff = x[:, None, :] - centroids[near]
        l2 = (diff**2).sum(2)
        parallel = np.einsum("bd,bkd->bk", r, diff) ** 2 / ((r**2).sum(1)[:, None] + 1e-12)
        own = near == p[:, None]
        loss = np.where(own, np.inf, l2 + lam * parallel)
        first[s:s + BLOCK] = p
        soar[s:s + BLOCK] = near[rows, loss.argmin(1)]
        second[s:s + BLOCK] = near[rows, np.where(own, np.inf, l2).argmin(1)]
    return first, soar, second


def main():
    root = sys.argv[1]
    lists = int(os.environ.get("LISTS", 1000))
    sample = int(os.environ.get("SAMPLE", 200_000))
    rounds = int(os.environ.get("ROUNDS", 8))
    lam = float(os.environ.get("LAMBDA", 1.0))
    nprobes = [int(v) for v in os.environ.get("NPROBE", "10,20,30,50,80,120,200").split(",")]
    base = normalized(np.load(os.path.join(root, "base.npy")))
    queries = normalized(np.load(os.path.join(root, "queries.npy")))
    truth = np.load(os.path.join(root, "gt_cosine.npy"))[:, :10]
    rng = np.random.default_rng(0)
    train = base[rng.choice(len(base), min(sample, len(base)), replace=False)]
    centroids = kmeans(train, lists, rounds, rng)
    first, soar, second = assign(base, centroids, lam)
    order = np.argsort((centroids**2).sum(1)[None, :] - 2 * queries @ centroids.T, axis=1)
    rank = np.empty_like(order)
    rank[np.arange(len(queries))[:, None], order] = np.arange(lists)[None, :]
    q = np.arange(len(queries))[:, None]
    for nprobe in nprobes:
        probed = order[:, :nprobe]
        for scheme, extra in [("one list", None), ("soar", soar), ("second nearest", second)]:
            hit = rank[q, first[truth]] < nprobe
            entries = np.bincount(first, minlength=lists)[probed].sum(1).mean()
            if extra is not None:
                hit |= rank[q, extra[truth]] < nprobe
                entries += np.bincount(extra, minlength=lists)[probed].sum(1).mean()
            print(json.dumps({
                "lists": lists,
                "nprobe": nprobe,
                "scheme": scheme,
                "recall_bound": round(float(hit.mean()), 4),
                "entries_scanned": round(float(entries / len(base)), 4),
            }))


if __name__ == "__main__":
    main()
