#!/usr/bin/env bash
# Speculative decoding: decode speed with prompt lookup and with a draft model against
# decoding without them, on an input-grounded task, same model, machine and threads, in
# one run (`lamina bench --spec-text`; the modes take turns in each round).
#
#   bash bench/spec/run.sh            (results in bench/spec/results/)
#
# The task: rewrite a 1,000-token passage of ../shared/datasets/tinyshakespeare.txt with
# its mistakes corrected (output that mostly copies its input), greedy, up to 256 tokens,
# at 1 sequence and at 8 (each its own passage). The draft model defaults to a Q4_0 copy
# of the model: the same size, so it shows the mechanism's cost, not a speed-up; pass
# DRAFT=a smaller model with the same vocabulary (e.g. one `lamina pretrain` trained on
# the target's tokenizer) for that.
#
# Env: THREADS (2), BATCH (1,8), ROUNDS (3), TOKENS (256), PROMPT_TOKENS (1000), K (5),
# MODEL (the built-in SmolLM2 Q4_1 GGUF), DRAFT (a Q4_0 copy of MODEL), TEXT, LAMINA (a
# built binary instead of a fresh release build).
set -euo pipefail
cd "$(dirname "$0")/../.."
THREADS="${THREADS:-2}"
BATCH="${BATCH:-1,8}"
ROUNDS="${ROUNDS:-3}"
TOKENS="${TOKENS:-256}"
PROMPT_TOKENS="${PROMPT_TOKENS:-1000}"
K="${K:-5}"
TEXT="${TEXT:-../shared/datasets/tinyshakespeare.txt}"
OUT=bench/spec/results
mkdir -p "$OUT"

if [ -z "${LAMINA:-}" ]; then
  cargo build --release -q -p lamina-cli
  LAMINA="${CARGO_TARGET_DIR:-target}/release/lamina"
fi
MODEL="${MODEL:-$HOME/.cache/lamina/models/smollm2-135m-instruct/SmolLM2-135M-Instruct.Q4_1.gguf}"
[ -f "$MODEL" ] || "$LAMINA" info >/dev/null # fetches the built-in model on first use
if [ -z "${DRAFT:-}" ]; then
  DRAFT="$OUT/draft-q4_0.gguf"
  [ -f "$DRAFT" ] || "$LAMINA" quantize "$MODEL" "$DRAFT" --type q4_0
fi

echo "== machine: $(lscpu | sed -n 's/^Model name: *//p'), $(nproc) CPUs; threads $THREADS" | tee "$OUT/machine.txt"
"$LAMINA" bench "$MODEL" --threads "$THREADS" --spec-text "$TEXT" --spec-prompt-tokens "$PROMPT_TOKENS" \
  -n "$TOKENS" -r "$ROUNDS" --batch "$BATCH" --draft-tokens "$K" --draft "$DRAFT" | tee "$OUT/spec.txt"
