#!/usr/bin/env bash
# Serving throughput and latency: `lamina serve` against llama.cpp's `llama-server`, same
# model, same machine, same thread count, same client, in one run.
#
#   bash bench/serve/run.sh            (results in bench/serve/results/)
#
# The client (bench/serve/load.py, the `openai` Python package) streams 128-token chat
# completions at 1, 4, 8, 16 and 32 concurrent streams against each server in turn, then
# times requests that share a 1,000-token system prompt. `lamina bench` measures the
# engine's batched decode at the same concurrencies, for the server's overhead.
#
# Env: THREADS (2), CONCURRENCY (1,4,8,16,32), ROUNDS (2), MODEL (the built-in SmolLM2
# Q4_1 GGUF), LLAMA_SERVER (default: ../shared/tools/build-llama-cpp.sh's build).
set -euo pipefail
cd "$(dirname "$0")/../.."
THREADS="${THREADS:-2}"
CONCURRENCY="${CONCURRENCY:-1,4,8,16,32}"
ROUNDS="${ROUNDS:-2}"
OUT=bench/serve/results
mkdir -p "$OUT"

VENV="$HOME/.cache/lamina-ref/openai-venv"
if ! "$VENV/bin/python" -c "import openai" 2>/dev/null; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q "openai==3.57.0"
fi
cargo build --release -q -p lamina-cli
LAMINA="${CARGO_TARGET_DIR:-target}/release/lamina"
MODEL="${MODEL:-$("$LAMINA" info 2>/dev/null | sed -n 's/^model: *//p' | head -1)}"
[ -n "$MODEL" ] || MODEL="$HOME/.cache/lamina/models/smollm2-135m-instruct/SmolLM2-135M-Instruct.Q4_1.gguf"
LLAMA_SERVER="${LLAMA_SERVER:-$(bash ../shared/tools/build-llama-cpp.sh)/llama-server}"

wait_up() { for _ in $(seq 600); do curl -sf "http://127.0.0.1:$1/health" >/dev/null && return 0; sleep 0.1; done; echo "server on $1 did not start" >&2; return 1; }
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT

run_client() { # name port model
  "$VENV/bin/python" bench/serve/load.py "http://127.0.0.1:$2/v1" "$3" --concurrency "$CONCURRENCY" --rounds "$ROUNDS" | tee "$OUT/$1.jsonl"
  "$VENV/bin/python" bench/serve/load.py "http://127.0.0.1:$2/v1" "$3" --shared-prefix 1000 | tee "$OUT/$1-prefix.json"
}

echo "== machine: $(lscpu | sed -n 's/^Model name: *//p'), $(nproc) CPUs; threads $THREADS" | tee "$OUT/machine.txt"

echo "== llama-server -np 16 -c 32768"
"$LLAMA_SERVER" -m "$MODEL" -np 16 -c 32768 -t "$THREADS" -tb "$THREADS" --port 18181 > "$OUT/llama-server.log" 2>&1 &
PIDS+=($!)
wait_up 18181
run_client llama-server 18181 smollm2
kill "${PIDS[-1]}"; wait "${PIDS[-1]}" 2>/dev/null || true

echo "== lamina serve"
"$LAMINA" serve "smollm2=$MODEL" --threads "$THREADS" --max-sequences 32 --port 18182 > "$OUT/lamina.log" 2>&1 &
PIDS+=($!)
wait_up 18182
run_client lamina 18182 smollm2
kill "${PIDS[-1]}"; wait "${PIDS[-1]}" 2>/dev/null || true

echo "== lamina bench (engine only, batched decode)"
"$LAMINA" bench "$MODEL" --threads "$THREADS" --batch "$CONCURRENCY" -n 128 -r 2 | tee "$OUT/engine.txt"

python3 - "$OUT" <<'PY'
import json, re, sys
out = sys.argv[1]
load = lambda n: {r["concurrency"]: r for r in map(json.loads, open(f"{out}/{n}.jsonl"))}
ls, lm = load("llama-server"), load("lamina")
eng = {int(m[1]): float(m[2]) for m in re.finditer(r"batched decode, (\d+) sequences:\s+([\d.]+)", open(f"{out}/engine.txt").read())}
ms = lambda x: f"{x * 1000:.0f}" if x is not None else "-"
print("| streams | llama-server tok/s | lamina tok/s | ratio | TTFT p50 / p99 ms (llama-server) | TTFT p50 / p99 ms (lamina) | ITL p50 ms (llama-server / lamina) | lamina / engine batched decode: whole run, decode phase |")
print("|---|---|---|---|---|---|---|---|")
for c in sorted(lm):
    a, b = ls[c], lm[c]
    e = eng.get(c)
    print(f"| {c} | {a['tok_s']:.0f} | {b['tok_s']:.0f} | {b['tok_s'] / a['tok_s']:.2f}x | {ms(a['ttft_p50'])} / {ms(a['ttft_p99'])} | {ms(b['ttft_p50'])} / {ms(b['ttft_p99'])} | {ms(a['itl_p50'])} / {ms(b['itl_p50'])} | {b['tok_s'] / e:.0%}, {b['decode_tok_s'] / e:.0%} |" if e else "")
for n in ("llama-server", "lamina"):
    p = json.load(open(f"{out}/{n}-prefix.json"))
    print(f"{n}: shared 1,000-token system prompt, TTFT first {p['ttft'][0] * 1000:.0f} ms, later {', '.join(f'{t * 1000:.0f}' for t in p['ttft'][1:])} ms (worst later / first {p['later_over_first']:.0%})")
PY
