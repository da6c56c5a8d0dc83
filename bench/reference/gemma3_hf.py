"""Writes crates/lamina-engine/tests/reference/gemma3_hf_f32.jsonl: Hugging Face transformers'
outputs for Gemma 3 270M (the built-in `gemma-3-270m`), loading the same GGUF (weights
dequantized to f32, f32 activations), for the prompts llama.cpp's reference file holds
(their token ids are taken from it, so both references see the same input).

One record per prompt: `prompt_ids`, the greedy continuation of 32 tokens
(`generate(do_sample=False)`) and, at each step, the ten most likely tokens with their
log-probabilities.

    ~/.cache/lamina-ref/hf-venv/bin/python bench/reference/gemma3_hf.py GGUF_FILE
(the venv: pip install torch transformers accelerate gguf; `lamina info gemma-3-270m`
prints where the GGUF is).
"""
import json, os, sys
import torch
from transformers import AutoModelForCausalLM

here = os.path.dirname(os.path.abspath(__file__))
ref = os.path.join(here, "../../crates/lamina-engine/tests/reference")
gguf = os.path.abspath(sys.argv[1])
model = AutoModelForCausalLM.from_pretrained(os.path.dirname(gguf), gguf_file=os.path.basename(gguf), dtype=torch.float32)
model.eval()
out = os.path.join(ref, "gemma3_hf_f32.jsonl")
with open(os.path.join(ref, "gemma3_llamacpp.jsonl"), encoding="utf-8") as f:
    prompts = [json.loads(l) for l in f if '"prompt"' in l]
with open(out + ".tmp", "w", encoding="utf-8") as f:
    for p in prompts:
        ids = torch.tensor([p["prompt_ids"]])
        with torch.no_grad():
            g = model.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False, max_new_tokens=32, min_new_tokens=32,
                               output_logits=True, return_dict_in_generate=True, pad_token_id=0)
        new = g.sequences[0, ids.shape[1]:].tolist()
        tops = []
        for logits in g.logits:
            lp = torch.log_softmax(logits[0].double(), -1)
            v, i = lp.topk(10)
            tops.append([[int(a), float(b)] for a, b in zip(i, v)])
        f.write(json.dumps({"prompt": p["prompt"], "prompt_ids": p["prompt_ids"], "greedy_ids": new, "top_logprobs": tops}, ensure_ascii=False) + "\n")
        print(len(p["prompt_ids"]), repr(p["prompt"][:40]), new[:8], flush=True)
os.replace(out + ".tmp", out)
