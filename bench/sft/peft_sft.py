"""PEFT LoRA fine-tuning of SmolLM2-135M-Instruct on Alpaca records, the reference side of
bench/sft/run.sh: the same data, chat template, assistant-only loss, rank, alpha, targets,
batch size, length limit, optimizer (AdamW, lr 2e-4) and thread count as `lamina sft`.

Prints one JSON line: tokens/s over the training steps (padding excluded, as Lamina counts)
and the peak resident set size.

    python peft_sft.py GGUF_DIR GGUF_FILE DATA STEPS BATCH MAX_LEN THREADS
"""
import json, resource, sys, time

import torch
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForCausalLM, AutoTokenizer

gguf_dir, gguf_file, data, steps, batch, max_len, threads = sys.argv[1], sys.argv[2], sys.argv[3], *map(int, sys.argv[4:8])
torch.set_num_threads(threads)
torch.manual_seed(1)
tok = AutoTokenizer.from_pretrained(gguf_dir, gguf_file=gguf_file)
model = AutoModelForCausalLM.from_pretrained(gguf_dir, gguf_file=gguf_file, torch_dtype=torch.float32)
cfg = LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0, target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"], task_type="CAUSAL_LM")
model = get_peft_model(model, cfg)
model.train()


def encode(rec):
    user = rec["instruction"] if not rec.get("input") else rec["instruction"] + "\n\n" + rec["input"]
    msgs = [{"role": "user", "content": user}]
    prompt = tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
    full = tok.apply_chat_template(msgs + [{"role": "assistant", "content": rec["output"]}], tokenize=False)
    p = tok(prompt, add_special_tokens=False)["input_ids"]
    a = tok(full[len(prompt):], add_special_tokens=False)["input_ids"]
    ids = p + a
    labels = [-100] * len(p) + a
    return ids[:-1], labels[1:]


examples = [e for e in (encode(r) for r in json.load(open(data))) if len(e[0]) <= max_len]
opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=2e-4, weight_decay=0.0)
tokens, secs = 0, 0.0
for step in range(steps):
    chunk = examples[step * batch:(step + 1) * batch]
    t = max(len(e[0]) for e in chunk)
    ids = torch.tensor([e[0] + [0] * (t - len(e[0])) for e in chunk])
    labels = torch.tensor([e[1] + [-100] * (t - len(e[1])) for e in chunk])
    attn = torch.tensor([[1] * len(e[0]) + [0] * (t - len(e[0])) for e in chunk])
    t0 = time.perf_counter()
    logits = model(input_ids=ids, attention_mask=attn).logits
    loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1), ignore_index=-100)
    loss.backward()
    torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], 1.0)
    opt.step()
    opt.zero_grad()
    secs += time.perf_counter() - t0
    tokens += sum(len(e[0]) for e in chunk)
print(json.dumps({"tokens_per_s": tokens / secs, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "steps": steps, "loss": loss.item()}))
