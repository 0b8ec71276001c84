"""Exact top-100 by cosine, a block of base rows at a time, for the dataset-making scripts
beside it (`from ground_truth import exact_top100` when run as `python benches/...`)."""
import numpy as np


def exact_top100(queries, base, block=65_536):
    """The 100 rows of `base` (any float dtype, rows normalized here) nearest each of `queries`
    by cosine, best first, as int32 [len(queries), 100]."""
    qn = queries / np.linalg.norm(queries, axis=1, keepdims=True)
    best_s = np.full((len(qn), 100), -np.inf, dtype=np.float32)
    best_i = np.zeros((len(qn), 100), dtype=np.int64)
    for s in range(0, len(base), block):
        b = base[s:s + block].astype(np.float32)
        b /= np.linalg.norm(b, axis=1, keepdims=True)
        sims = np.concatenate([best_s, qn @ b.T], axis=1)
        ids = np.concatenate([best_i, np.broadcast_to(np.arange(s, s + len(b)), (len(qn), len(b)))], axis=1)
        top = np.argpartition(-sims, 100, axis=1)[:, :100]
        best_s, best_i = np.take_along_axis(sims, top, axis=1), np.take_along_axis(ids, top, axis=1)
    order = np.argsort(-best_s, axis=1, kind="stable")
    return np.take_along_axis(best_i, order, axis=1).astype(np.int32)
