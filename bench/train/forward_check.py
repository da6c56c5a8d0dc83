"""Checks Lamina's GPT-2 forward pass against an independent PyTorch one on the same weights.

Loads a Lamina checkpoint (model.safetensors + tokenizer.json of a char-level GPT-2 run),
scores a text the way `lamina perplexity --ctx CTX` does (windows of CTX tokens, the
second half of each window scored) and prints the perplexity. Run both and compare:

    python forward_check.py CKPT_DIR TEXT [--ctx 64]
    lamina perplexity CKPT_DIR TEXT --ctx 64

Used to rule out a model difference when comparing validation losses with PyTorch
(docs/training.md): equal perplexities mean equal forward passes, and the fused
engine's gradients are tested against autograd (crates/lamina-train/tests/fused.rs).
"""
import argparse, json, math, struct

import numpy as np
import torch
import torch.nn.functional as F

p = argparse.ArgumentParser()
p.add_argument("ckpt")
p.add_argument("text")
p.add_argument("--ctx", type=int, default=64)
a = p.parse_args()

cfg = json.load(open(a.ckpt + "/config.json"))
C, H, L, eps = cfg["n_embd"], cfg["n_head"], cfg["n_layer"], cfg["layer_norm_epsilon"]
raw = open(a.ckpt + "/model.safetensors", "rb").read()
hlen = struct.unpack("<Q", raw[:8])[0]
header = json.loads(raw[8 : 8 + hlen])
W = {}
for name, meta in header.items():
    if name == "__metadata__":
        continue
    lo, hi = meta["data_offsets"]
    assert meta["dtype"] == "F32", f"{name}: {meta['dtype']}"
    W[name] = torch.from_numpy(np.frombuffer(raw[8 + hlen + lo : 8 + hlen + hi], dtype=np.float32).reshape(meta["shape"]).copy())
vocab = json.load(open(a.ckpt + "/tokenizer.json"))["model"]["vocab"]
ids = torch.tensor([vocab[ch] for ch in open(a.text, encoding="utf-8").read()])


def ln(x, prefix):
    return F.layer_norm(x, (C,), W[prefix + ".weight"], W[prefix + ".bias"], eps)


def forward(idx):
    B, T = idx.shape
    x = W["wte.weight"][idx] + W["wpe.weight"][:T]
    for l in range(L):
        p_ = f"h.{l}."
        qkv = ln(x, p_ + "ln_1") @ W[p_ + "attn.c_attn.weight"] + W[p_ + "attn.c_attn.bias"]
        q, k, v = (t.view(B, T, H, C // H).transpose(1, 2) for t in qkv.split(C, dim=2))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True).transpose(1, 2).reshape(B, T, C)
        x = x + y @ W[p_ + "attn.c_proj.weight"] + W[p_ + "attn.c_proj.bias"]
        h = F.gelu(ln(x, p_ + "ln_2") @ W[p_ + "mlp.c_fc.weight"] + W[p_ + "mlp.c_fc.bias"], approximate="tanh")
        x = x + h @ W[p_ + "mlp.c_proj.weight"] + W[p_ + "mlp.c_proj.bias"]
    return ln(x, "ln_f") @ W["wte.weight"].t()


ctx, first = a.ctx, a.ctx // 2
windows = ids[: len(ids) // ctx * ctx].view(-1, ctx)
with torch.no_grad():
    logp = F.log_softmax(forward(windows).double(), -1)
    scored = logp[:, first : ctx - 1].gather(2, windows[:, first + 1 :].unsqueeze(-1))
print(f"PPL = {math.exp(-scored.mean().item()):.4f}")
