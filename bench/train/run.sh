#!/usr/bin/env bash
# Training speed: Lamina vs our own PyTorch model, nanoGPT "baby GPT" recipe (char level,
# block 64, batch 12, 4 layers, 4 heads, 128 dims, 2000 iterations), same corpus.
#
#   bash bench/train/run.sh [ITERS]      (default 2000; results in bench/train/results/)
#
# Then PAIRS (default 6) short speed runs of SPEED_ITERS (default 300) iterations each,
# Lamina and PyTorch taking turns (order alternating), so that the machine's minute-to-
# minute drift hits both alike: their per-pair ratios and the median are the robust figure
# (the 2000-iteration runs above run minutes apart). PAIRS=0 skips them.
#
# Needs: python3 with venv, pip access to PyPI (torch), /usr/bin/time (apt-get install time),
# and ../shared/datasets/tinyshakespeare.txt beside the checkout.
set -euo pipefail
cd "$(dirname "$0")/../.."
ITERS="${1:-2000}"
THREADS="${THREADS:-2}"
OUT=bench/train/results
mkdir -p "$OUT" bench/train/data

# 1. PyTorch in a venv (CPU use only; PyPI's wheel also pulls CUDA libraries).
VENV=bench/.venv
if ! "$VENV/bin/python" -c "import torch" 2>/dev/null; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q numpy torch
fi

# 2. Corpus: tinyshakespeare from ../shared/datasets (nanoGPT's shakespeare_char input).
DATA=../shared/datasets/tinyshakespeare.txt
[ -s "$DATA" ] || { echo "missing $DATA (the shared/ folder beside the checkout)" >&2; exit 1; }

# 3. Lamina, release build.
cargo build --release -q -p lamina-train --example pretrain
rm -rf "$OUT/lamina-run"
/usr/bin/time -v -o "$OUT/lamina.time" "${CARGO_TARGET_DIR:-target}/release/examples/pretrain" \
  crates/lamina-train/examples/shakespeare_char.toml data="$DATA" out_dir="$OUT/lamina-run" \
  max_iters="$ITERS" threads="$THREADS" progress=false checkpoint_interval=0 sample_tokens=200 \
  2> "$OUT/lamina.log" | tee "$OUT/lamina.json"

# 4. PyTorch.
/usr/bin/time -v -o "$OUT/pytorch.time" "$VENV/bin/python" bench/train/nanogpt_baby.py \
  --data "$DATA" --iters "$ITERS" --threads "$THREADS" 2> "$OUT/pytorch.log" | tee "$OUT/pytorch.txt"

# 5. Interleaved speed pairs (training steps only; one evaluation batch at the end).
PAIRS="${PAIRS:-6}"
SPEED_ITERS="${SPEED_ITERS:-300}"
: > "$OUT/pairs.txt"
lamina_short() {
  rm -rf "$OUT/lamina-short"
  "${CARGO_TARGET_DIR:-target}/release/examples/pretrain" crates/lamina-train/examples/shakespeare_char.toml \
    data="$DATA" out_dir="$OUT/lamina-short" max_iters="$SPEED_ITERS" threads="$THREADS" progress=false \
    checkpoint_interval=0 sample_tokens=0 eval_iters=1 eval_interval=1000000 2>/dev/null | tail -n 1 |
    python3 -c 'import json,sys; print(json.loads(sys.stdin.read())["train_it_per_s"])'
}
pytorch_short() {
  "$VENV/bin/python" bench/train/nanogpt_baby.py --data "$DATA" --iters "$SPEED_ITERS" --threads "$THREADS" \
    --eval-interval 1000000 --eval-iters 1 2>/dev/null | tail -n 1 |
    python3 -c 'import json,sys; print(json.loads(sys.stdin.read())["train_it_per_s"])'
}
for i in $(seq 1 "$PAIRS"); do
  if [ $((i % 2)) -eq 1 ]; then l=$(lamina_short); p=$(pytorch_short); else p=$(pytorch_short); l=$(lamina_short); fi
  echo "$l $p" >> "$OUT/pairs.txt"
  python3 -c "print(f'pair $i: lamina {$l:.2f} it/s, pytorch {$p:.2f} it/s, ratio {$l / $p:.2f}x')"
done

# 6. Summary.
python3 - "$OUT" <<'PY'
import json, re, sys
d = sys.argv[1]
lam = json.loads(open(d + "/lamina.json").read().strip().splitlines()[-1])
pt = json.loads(open(d + "/pytorch.txt").read().strip().splitlines()[-1])
def rss(f):
    m = re.search(r"Maximum resident set size \(kbytes\): (\d+)", open(f).read())
    return int(m.group(1)) / 1024 if m else float("nan")
print(f"lamina : {lam['train_it_per_s']:.2f} it/s (train steps only), val loss {lam['final_val_loss']:.4f}, peak RSS {rss(d + '/lamina.time'):.0f} MiB, wall {lam['elapsed_s']:.0f} s")
print(f"pytorch: {pt['train_it_per_s']:.2f} it/s (train steps only), val loss {pt['final_val_loss']:.4f}, peak RSS {rss(d + '/pytorch.time'):.0f} MiB, wall {pt['elapsed_s']:.0f} s, torch {pt['torch']}")
print(f"ratio lamina/pytorch: {lam['train_it_per_s'] / pt['train_it_per_s']:.2f}x")
pairs = [tuple(map(float, l.split())) for l in open(d + "/pairs.txt") if l.strip()]
if pairs:
    r = sorted(a / b for a, b in pairs)
    med = r[len(r) // 2] if len(r) % 2 else (r[len(r) // 2 - 1] + r[len(r) // 2]) / 2
    print(f"interleaved {len(pairs)} pairs: ratios " + ", ".join(f"{a / b:.2f}" for a, b in pairs)
          + f"; median {med:.2f}x, min {r[0]:.2f}x, max {r[-1]:.2f}x")
PY
