"""Splits embeddings into base vectors and held-out queries (every (N/Q)-th row, so both
cover every source) and writes the exact top-100 of each query by inner product (numpy,
float64), the ground truth both indexes are scored against.

    python3 split.py VECTORS.npy QUERIES_COUNT OUT_DIR
"""
import sys

import numpy as np

vectors, q, out = np.load(sys.argv[1]).astype(np.float32), int(sys.argv[2]), sys.argv[3]
n = len(vectors)
pick = np.zeros(n, dtype=bool)
pick[np.linspace(0, n - 1, q).astype(np.int64)] = True
base, queries = np.ascontiguousarray(vectors[~pick]), np.ascontiguousarray(vectors[pick])
truth = np.empty((len(queries), 100), dtype=np.int32)
for s in range(0, len(queries), 100):
    sims = queries[s : s + 100].astype(np.float64) @ base.astype(np.float64).T
    top = np.argpartition(-sims, 100, axis=1)[:, :100]
    order = np.argsort(-np.take_along_axis(sims, top, axis=1), axis=1, kind="stable")
    truth[s : s + 100] = np.take_along_axis(top, order, axis=1)
np.save(f"{out}/base.npy", base)
np.save(f"{out}/queries.npy", queries)
np.save(f"{out}/truth.npy", truth)
print(f"base {base.shape}, queries {queries.shape}")
