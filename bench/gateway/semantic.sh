#!/usr/bin/env bash
# The semantic cache's lookup when the cache is full (10,000 entries of 384 floats, all in
# one partition: the worst case), against the same brute-force scan in NumPy (a matrix-vector
# product, what a Python gateway's in-memory semantic cache does) in the same run.
#
#   bash bench/gateway/semantic.sh            ENTRIES=100000 bash bench/gateway/semantic.sh
#
# NumPy runs on one thread (OPENBLAS_NUM_THREADS=1), as a lookup does inside a server
# that is busy with other requests; THREADS=2 lets it use both cores.
# NumPy comes from the LiteLLM venv of bench/gateway/run.sh (VENV says otherwise).
set -euo pipefail
cd "$(dirname "$0")/../.."
VENV="${VENV:-$HOME/.cache/lamina-ref/litellm-venv}"
ENTRIES="${ENTRIES:-10000}"
DIM="${DIM:-384}"
if ! "$VENV/bin/python" -c "import numpy" 2>/dev/null; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check numpy
fi
cargo build --release -q -p lamina-gateway --example semantic_scan
ours=$("${CARGO_TARGET_DIR:-target}/release/examples/semantic_scan" --entries "$ENTRIES" --dim "$DIM")
echo "lamina: $ours"
ref=$(OPENBLAS_NUM_THREADS="${THREADS:-1}" "$VENV/bin/python" - "$ENTRIES" "$DIM" <<'PY'
import sys, time, numpy as np
n, d = int(sys.argv[1]), int(sys.argv[2])
rng = np.random.default_rng(0)
m = rng.uniform(-1, 1, (n, d)).astype(np.float32)
m /= np.linalg.norm(m, axis=1, keepdims=True)
q = rng.uniform(-1, 1, (200, d)).astype(np.float32)
q /= np.linalg.norm(q, axis=1, keepdims=True)
t0 = time.perf_counter()
for v in q:
    s = m @ v
    i = int(np.argmax(s))
ms = (time.perf_counter() - t0) * 1e3 / len(q)
print(f'{{"entries": {n}, "dim": {d}, "ms_per_lookup": {ms:.4f}}}')
PY
)
echo "numpy:  $ref"
python3 -c "import json,sys; a=json.loads(sys.argv[1]); b=json.loads(sys.argv[2]); print(f\"lookup {a['ms_per_lookup']:.3f} ms vs numpy {b['ms_per_lookup']:.3f} ms: {a['ms_per_lookup']/b['ms_per_lookup']:.2f}x its time\")" "$ours" "$ref"
