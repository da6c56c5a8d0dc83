"""Cosine between two .npy embedding matrices, row by row: `python compare.py A.npy B.npy`."""
import sys

import numpy as np

a, b = np.load(sys.argv[1]).astype(np.float64), np.load(sys.argv[2]).astype(np.float64)
assert a.shape == b.shape, (a.shape, b.shape)
cos = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
print(f"cosine over {len(cos)} texts: min {cos.min():.6f}, mean {cos.mean():.6f}")
