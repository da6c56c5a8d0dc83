#!/usr/bin/env bash
# Paired run: Lamina and our PyTorch model trained from the same initial weights on the
# same batches (PyTorch's --twin mode replays Lamina's SplitMix64 draws), then compared
# step by step. Equal losses mean equal training, so any difference between the two
# implementations' final validation losses over seeds is the seed, not the code.
#
#   bash bench/train/twin.sh [SEED] [ITERS]      (defaults 1337, 2000; 1 thread each, run side by side)
#
# Needs what bench/train/run.sh needs (it creates bench/.venv with torch).
set -euo pipefail
cd "$(dirname "$0")/../.."
SEED="${1:-1337}"
ITERS="${2:-2000}"
OUT=bench/train/results/twin-$SEED
DATA=../shared/datasets/tinyshakespeare.txt
VENV=bench/.venv
[ -s "$DATA" ] || { echo "missing $DATA (the shared/ folder beside the checkout)" >&2; exit 1; }
if ! "$VENV/bin/python" -c "import torch" 2>/dev/null; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q numpy torch
fi
cargo build --release -q -p lamina-train --example pretrain
rm -rf "$OUT" && mkdir -p "$OUT"

# sample_tokens=0: the samples would draw from the evaluation generator.
"${CARGO_TARGET_DIR:-target}/release/examples/pretrain" crates/lamina-train/examples/shakespeare_char.toml \
  data="$DATA" out_dir="$OUT/lamina" seed="$SEED" max_iters="$ITERS" threads=1 progress=false \
  checkpoint_interval=0 sample_tokens=0 log_interval=1 > "$OUT/lamina.json" 2> "$OUT/lamina.log" &
"$VENV/bin/python" bench/train/nanogpt_baby.py --data "$DATA" --iters "$ITERS" --threads 1 --seed "$SEED" \
  --twin --loss-log "$OUT/pytorch.loss" > "$OUT/pytorch.txt" 2> "$OUT/pytorch.log"
wait

python3 - "$OUT" <<'PY'
import json, sys
d = sys.argv[1]
rows = [json.loads(l) for l in open(d + "/lamina/metrics.jsonl")]
lam = {r["step"]: r["train_loss"] for r in rows if "train_loss" in r}
pt = [float(x) for x in open(d + "/pytorch.loss")]
print("step   lamina train loss   pytorch train loss   |diff|")
for s in (1, 10, 100, 250, 500, 1000, 1500, 2000):
    if s in lam and s <= len(pt):
        print(f"{s:>5}   {lam[s]:>17.6f}   {pt[s - 1]:>18.6f}   {abs(lam[s] - pt[s - 1]):.1e}")
worst = max(range(1, len(pt) + 1), key=lambda s: abs(lam[s] - pt[s - 1]))
print(f"largest per-step difference: {abs(lam[worst] - pt[worst - 1]):.1e} at step {worst}")
ev = [r for r in rows if "val_loss" in r]
pev = [l for l in open(d + "/pytorch.txt") if l.startswith("step ")]
for r, l in zip(ev, pev):
    print(f"eval step {r['step']:>5}: lamina train {r['eval_train_loss']:.4f} val {r['val_loss']:.4f} | pytorch {l.split(':', 1)[1].strip()}")
PY
