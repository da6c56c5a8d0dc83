#!/usr/bin/env bash
# Constrained decoding: what a JSON schema costs, and lamina against llama-server on the
# same JSON-schema requests.
#
#   bash bench/serve/structured.sh     (results in bench/serve/results/structured-*)
#
# bench/serve/load.py streams chat completions (ignore_eos, up to TOKENS tokens) at 1 and 8
# concurrent streams: against `lamina serve` without and with `--json-schema
# bench/serve/schema.json` (a reply of ~150-250 tokens that ends where the JSON does), then
# against llama-server with the same schema. Then the engine example `grammar_mask` times
# llguidance's mask per token on the same schema (no model, one thread).
# Goals: lamina with the schema ≤ 10% slower than without; ≥ 2× llama-server's tok/s.
#
# Env: THREADS (2), CONCURRENCY (1,8), ROUNDS (3), TOKENS (256), MODEL, LLAMA_SERVER
# (default: ../shared/tools/build-llama-cpp.sh's build).
set -euo pipefail
cd "$(dirname "$0")/../.."
THREADS="${THREADS:-2}"
CONCURRENCY="${CONCURRENCY:-1,8}"
ROUNDS="${ROUNDS:-3}"
TOKENS="${TOKENS:-256}"
OUT=bench/serve/results
mkdir -p "$OUT"
VENV="$HOME/.cache/lamina-ref/openai-venv"
if ! "$VENV/bin/python" -c "import openai" 2>/dev/null; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q "openai==3.57.0"
fi
cargo build --release -q -p lamina-cli
cargo build --release -q -p lamina-engine --example grammar_mask
LAMINA="${CARGO_TARGET_DIR:-target}/release/lamina"
MODEL="${MODEL:-$HOME/.cache/lamina/models/smollm2-135m-instruct/SmolLM2-135M-Instruct.Q4_1.gguf}"
LLAMA_SERVER="${LLAMA_SERVER:-$(bash ../shared/tools/build-llama-cpp.sh)/llama-server}"
SCHEMA=bench/serve/schema.json

wait_up() { for _ in $(seq 600); do curl -sf "http://127.0.0.1:$1/health" >/dev/null && return 0; sleep 0.1; done; echo "server on $1 did not start" >&2; return 1; }
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT
load() { "$VENV/bin/python" bench/serve/load.py "http://127.0.0.1:$1/v1" smollm2 --concurrency "$CONCURRENCY" --rounds "$ROUNDS" --tokens "$TOKENS" "${@:2}"; }

echo "== lamina serve"
"$LAMINA" serve "smollm2=$MODEL" --threads "$THREADS" --max-sequences 16 --port 18183 > "$OUT/structured-lamina.log" 2>&1 &
PIDS+=($!)
wait_up 18183
load 18183 | tee "$OUT/structured-lamina-plain.jsonl"
load 18183 --json-schema "$SCHEMA" | tee "$OUT/structured-lamina-schema.jsonl"
kill "${PIDS[-1]}"; wait "${PIDS[-1]}" 2>/dev/null || true

if [ -x "$LLAMA_SERVER" ]; then
  echo "== llama-server -np 8"
  "$LLAMA_SERVER" -m "$MODEL" -np 8 -c 16384 -t "$THREADS" -tb "$THREADS" --port 18184 > "$OUT/structured-llama-server.log" 2>&1 &
  PIDS+=($!)
  wait_up 18184
  load 18184 --json-schema "$SCHEMA" | tee "$OUT/structured-llama-server-schema.jsonl"
  kill "${PIDS[-1]}"; wait "${PIDS[-1]}" 2>/dev/null || true
else
  echo "llama-server not found at $LLAMA_SERVER: skipping the comparison" >&2
fi

echo "== llguidance mask time per token"
"${CARGO_TARGET_DIR:-target}/release/examples/grammar_mask" "$MODEL" "$SCHEMA" | tee "$OUT/structured-mask.txt"

python3 - "$OUT" <<'PY'
import json, os, sys
out = sys.argv[1]
load = lambda n: {r["concurrency"]: r for r in map(json.loads, open(f"{out}/structured-{n}.jsonl"))} if os.path.exists(f"{out}/structured-{n}.jsonl") else {}
plain, schema, ls = load("lamina-plain"), load("lamina-schema"), load("llama-server-schema")
# Whole run: tokens over wall time from the first request (schema replies are shorter, so
# their prompts weigh more); decode phase: tokens over the time once every stream has its
# first token — what the mask itself costs.
print("| streams | lamina tok/s (decode phase) | lamina + schema | schema cost, whole run / decode phase | llama-server + schema | lamina / llama-server, whole run / decode phase |")
print("|---|---|---|---|---|---|")
for c in sorted(schema):
    p, s, l = plain[c], schema[c], ls.get(c)
    cost = f"{1 - s['tok_s'] / p['tok_s']:+.1%} / {1 - s['decode_tok_s'] / p['decode_tok_s']:+.1%}"
    vs = f"{l['tok_s']:.0f} ({l['decode_tok_s']:.0f}) | {s['tok_s'] / l['tok_s']:.2f}x / {s['decode_tok_s'] / l['decode_tok_s']:.2f}x" if l else "- | -"
    print(f"| {c} | {p['tok_s']:.0f} ({p['decode_tok_s']:.0f}) | {s['tok_s']:.0f} ({s['decode_tok_s']:.0f}) | {cost} | {vs} |")
PY
