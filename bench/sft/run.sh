#!/usr/bin/env bash
# LoRA supervised fine-tuning: `lamina sft` against PEFT on the same machine, data and
# settings in one run (SmolLM2-135M-Instruct, Alpaca, r 16, α 32 on all seven projections,
# batch 4, ≤ 512 tokens, AdamW lr 2e-4, 2 threads, f32). Prints tokens/s and peak RSS of
# each and their ratios.
#
#   bash bench/sft/run.sh            (results in bench/sft/results/)
#   STEPS=5 bash bench/sft/run.sh    (a quick check)
#
# PEFT, transformers and torch go into a venv cached at ~/.cache/lamina-ref/peft-venv
# (reused when present). transformers reads the same GGUF file Lamina runs (dequantized to
# f32, as `lamina sft` trains on it). Env: THREADS (2), STEPS (20), LAMINA (a built
# binary), VENV, REFERENCE (1; 0 skips PEFT).
set -euo pipefail
cd "$(dirname "$0")/../.."
THREADS="${THREADS:-2}"
STEPS="${STEPS:-20}"
REFERENCE="${REFERENCE:-1}"
VENV="${VENV:-$HOME/.cache/lamina-ref/peft-venv}"
OUT=bench/sft/results
mkdir -p "$OUT"
if [ -z "${LAMINA:-}" ]; then
  cargo build --release -q -p lamina-cli
  LAMINA="${CARGO_TARGET_DIR:-target}/release/lamina"
fi
MODEL="$("$LAMINA" info 2>/dev/null | sed -n 's/^model: *//p' | head -1)"
[ -f "$MODEL" ] || { echo "could not find the default model file" >&2; exit 1; }
# The first STEPS*4 records that fit, plus 4 held out (the trainer needs some).
python3 -c "
import json, sys
rows = json.load(open('../shared/datasets/alpaca_5000.json', encoding='utf-8'))[:int(sys.argv[1]) * 4 + 40]
json.dump(rows, open(sys.argv[2], 'w'))
" "$STEPS" "$OUT/data.json"
echo "== machine: $(lscpu | sed -n 's/^Model name: *//p'), $(nproc) CPUs; threads $THREADS; $STEPS steps" | tee "$OUT/summary.txt"
/usr/bin/time -v "$LAMINA" sft --data "$OUT/data.json" --out "$OUT/lamina-adapter" --lora 16 --alpha 32 --steps "$STEPS" --batch 4 \
  --max-len 512 --held-out 4 --on-bad-record skip -t "$THREADS" > "$OUT/lamina.txt" 2> "$OUT/lamina.err"
L_TOKS=$(sed -n 's/.* tokens at \([0-9.]*\) tok\/s.*/\1/p' "$OUT/lamina.txt")
L_RSS=$(sed -n 's/.*Maximum resident set size (kbytes): //p' "$OUT/lamina.err")
echo "lamina sft: $L_TOKS tok/s, peak RSS $((L_RSS / 1024)) MB" | tee -a "$OUT/summary.txt"
if [ "$REFERENCE" = 1 ]; then
  if [ ! -x "$VENV/bin/python" ]; then
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install -q torch transformers peft gguf
  fi
  P=$("$VENV/bin/python" bench/sft/peft_sft.py "$(dirname "$MODEL")" "$(basename "$MODEL")" "$OUT/data.json" "$STEPS" 4 512 "$THREADS" | tail -1)
  echo "peft: $P" | tee -a "$OUT/summary.txt"
  python3 -c "
import json, sys
p = json.loads(sys.argv[1]); lt, lr = float(sys.argv[2]), float(sys.argv[3]) / 1024
print(f'lamina / peft: {lt / p[\"tokens_per_s\"]:.2f}x tokens/s, {lr / p[\"peak_rss_mb\"]:.2f}x peak memory')
" "$P" "$L_TOKS" "$L_RSS" | tee -a "$OUT/summary.txt"
fi
