#!/usr/bin/env bash
# Writes crates/lamina-engine/tests/reference/gemma3_llamacpp.jsonl: llama.cpp's outputs for
# Gemma 3 270M (the built-in `gemma-3-270m`), which gemma3_reference.rs checks Lamina against.
#   - one record per prompt: llama-server's tokens of the prompt (with BOS), its greedy
#     continuation of 32 tokens and, at each step, the 10 most likely tokens with their
#     log-probabilities before sampling (`n_probs`, `post_sampling_probs: false`);
#   - one record with llama-perplexity's figure on the first 32,768 bytes of tinyshakespeare
#     with 1,024-token windows (past the 512-position sliding window of the local layers).
# Usage: bench/reference/gemma3_llamacpp.sh   (builds llama.cpp once, ~15 min on 2 cores)
set -euo pipefail
cd "$(dirname "$0")/../.."
BIN=$(../shared/tools/build-llama-cpp.sh)
cargo build --release -q -p lamina-cli
MODEL=$(./target/release/lamina info gemma-3-270m | awk '/^model:/ {print $2}')
OUT=crates/lamina-engine/tests/reference/gemma3_llamacpp.jsonl
TMP=$(mktemp -d)
trap 'kill $SERVER 2>/dev/null || true; rm -rf "$TMP"' EXIT
PORT=18931
"$BIN/llama-server" -m "$MODEL" --port $PORT -c 4096 -np 1 -t "$(nproc)" >"$TMP/server.log" 2>&1 &
SERVER=$!
head -c 32768 ../shared/datasets/tinyshakespeare.txt >"$TMP/shk.txt"
PPL=$("$BIN/llama-perplexity" -m "$MODEL" -f "$TMP/shk.txt" -c 1024 -t "$(nproc)" 2>&1 | sed -n 's/.*Final estimate: PPL = \([0-9.]*\).*/\1/p')
python3 - "$PORT" "$OUT" "$PPL" <<'PY'
import json, sys, time, urllib.request
port, out, ppl = sys.argv[1], sys.argv[2], float(sys.argv[3])
def post(path, body):
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", json.dumps(body).encode(), {"Content-Type": "application/json"})
    return json.load(urllib.request.urlopen(req, timeout=600))
for _ in range(120):
    try:
        urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2)
        break
    except Exception:
        time.sleep(1)
shakespeare = open("../shared/datasets/tinyshakespeare.txt", encoding="utf-8").read()[:2600]
prompts = [
    "The capital of France is",
    "Once upon a time, in a small village by the sea,",
    "def fibonacci(n):\n",
    "The three primary colors are",
    "Large language models are trained to",
    "1, 2, 3, 4, 5,",
    "Question: What is the boiling point of water at sea level?\nAnswer:",
    "<start_of_turn>user\nWhat is the capital of France?<end_of_turn>\n<start_of_turn>model\n",
    # About 700 tokens: decoding runs past the local layers' 512-position window.
    shakespeare,
]
with open(out + ".tmp", "w", encoding="utf-8") as f:
    for p in prompts:
        ids = post("/tokenize", {"content": p, "add_special": True})["tokens"]
        r = post("/completion", {"prompt": ids, "n_predict": 32, "temperature": 0, "n_probs": 10,
                                 "post_sampling_probs": False, "cache_prompt": False})
        steps = r["completion_probabilities"]
        rec = {"prompt": p, "prompt_ids": ids, "greedy_ids": [s["id"] for s in steps], "greedy_text": r["content"],
               "top_logprobs": [[[t["id"], t["logprob"]] for t in s["top_logprobs"]] for s in steps]}
        f.write(json.dumps(rec, ensure_ascii=False) + "\n")
    f.write(json.dumps({"perplexity": ppl, "bytes": 32768, "ctx": 1024}) + "\n")
import os
os.replace(out + ".tmp", out)
print(f"wrote {out}: {len(prompts)} prompts, perplexity {ppl}")
PY
