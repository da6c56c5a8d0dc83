#!/usr/bin/env bash
# The vector index against faiss HNSW on real MiniLM vectors, same files, machine and
# thread count, in one run: build seconds, bytes a vector, queries/s and recall@10 at a
# sweep of search widths, and the ratios at equal recall.
#
#   bash bench/index/run.sh                 (70,000 vectors; results in bench/index/results/)
#   N=5000 Q=200 bash bench/index/run.sh    (a quick check)
#
# Texts: sentences of ../shared/datasets/alpaca_5000.json (instructions, inputs, outputs),
# tinyshakespeare lines, then hh-rlhf dialogue sentences, deduplicated (prepare.py); embedded once with the release
# `lamina embed --format npy` (all-MiniLM-L6-v2) and cached in
# ~/.cache/lamina-ref/index-bench/N/, with the split into base and Q held-out queries and
# the exact top-100 by numpy (split.py). faiss-cpu goes into the venv
# ~/.cache/lamina-ref/st-venv (numpy is there already) unless VENV says otherwise.
# faiss: IndexHNSWFlat(d, 32, inner product), its default efConstruction,
# omp_set_num_threads(THREADS). Ours: the example index_bench with the crate's defaults.
#
# Queries/s is the best of REPEAT (5) passes over the queries, on both sides.
#
# Env: N (70000), Q (1000), THREADS (2), REPEAT (5), M (ours; default the crate's), EFC (ours),
# LAMINA (a built binary instead of a fresh release build), VENV.
set -euo pipefail
cd "$(dirname "$0")/../.."
N="${N:-70000}"
Q="${Q:-1000}"
THREADS="${THREADS:-2}"
VENV="${VENV:-$HOME/.cache/lamina-ref/st-venv}"
CACHE="$HOME/.cache/lamina-ref/index-bench/$N-$Q"
OUT=bench/index/results
mkdir -p "$OUT" "$CACHE"

if [ -z "${LAMINA:-}" ]; then
  cargo build --release -q -p lamina-cli
  LAMINA="${CARGO_TARGET_DIR:-target}/release/lamina"
fi
cargo build --release -q -p lamina-rag --example index_bench
BENCH="${CARGO_TARGET_DIR:-target}/release/examples/index_bench"

if [ ! -x "$VENV/bin/python" ]; then
  python3 -m venv "$VENV"
fi
"$VENV/bin/python" -c "import numpy" 2>/dev/null || "$VENV/bin/pip" install --quiet --disable-pip-version-check numpy
"$VENV/bin/python" -c "import faiss" 2>/dev/null || "$VENV/bin/pip" install --quiet --disable-pip-version-check faiss-cpu
PY="$VENV/bin/python"

if [ ! -f "$CACHE/truth.npy" ]; then
  python3 bench/index/prepare.py "$((N + Q))" "$CACHE/texts.txt"
  "$LAMINA" embed all-minilm-l6-v2 "$CACHE/texts.txt" --threads "$(nproc)" --format npy -o "$CACHE/vectors.npy"
  "$PY" bench/index/split.py "$CACHE/vectors.npy" "$Q" "$CACHE"
fi

echo "== machine: $(lscpu | sed -n 's/^Model name: *//p'), $(nproc) CPUs; threads $THREADS; $N vectors, $Q queries" | tee "$OUT/summary.txt"
"$PY" bench/index/faiss_bench.py "$CACHE/base.npy" "$CACHE/queries.npy" "$CACHE/truth.npy" "$THREADS" 32 > "$OUT/faiss.json"
ARGS=(--threads "$THREADS" --repeat "${REPEAT:-5}")
[ -n "${M:-}" ] && ARGS+=(--m "$M")
[ -n "${EFC:-}" ] && ARGS+=(--ef-construction "$EFC")
"$BENCH" "$CACHE/base.npy" "$CACHE/queries.npy" "$CACHE/truth.npy" "${ARGS[@]}" > "$OUT/lamina.json"
"$PY" bench/index/compare.py "$OUT/lamina.json" "$OUT/faiss.json" | tee -a "$OUT/summary.txt"
