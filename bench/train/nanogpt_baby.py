"""Our own small PyTorch GPT (nanoGPT's "baby GPT" recipe) for comparing training speed
with Lamina on the same data, same model shape and same optimiser settings.

GPT-2 architecture: LayerNorm with bias, learned positions, fused qkv, GELU (tanh), tied
head; 4 layers, 4 heads, 128 dims, block 64, batch 12, no dropout (Lamina has none).
AdamW lr 1e-3 (warm-up 100, cosine to 1e-4 at 2000), betas (0.9, 0.99), wd 0.1 on 2-D
weights, grad clip 1.0. Char-level vocabulary from the corpus; first 90 % train.

    python nanogpt_baby.py --data input.txt [--iters 2000] [--threads 2]

Prints one JSON line with iterations/s of training steps alone (evaluation excluded).
"""
import argparse, json, math, time

import torch
import torch.nn as nn
import torch.nn.functional as F

p = argparse.ArgumentParser()
p.add_argument("--data", required=True)
p.add_argument("--iters", type=int, default=2000)
p.add_argument("--threads", type=int, default=2)
p.add_argument("--eval-interval", type=int, default=250)
p.add_argument("--eval-iters", type=int, default=200)
p.add_argument("--seed", type=int, default=1337)
a = p.parse_args()
torch.set_num_threads(a.threads)
torch.manual_seed(a.seed)

block, batch, n_layer, n_head, n_embd = 64, 12, 4, 4, 128
lr, min_lr, warmup, decay_iters = 1e-3, 1e-4, 100, 2000

text = open(a.data, encoding="utf-8").read()
chars = sorted(set(text))
stoi = {c: i for i, c in enumerate(chars)}
data = torch.tensor([stoi[c] for c in text], dtype=torch.long)
n = len(data) * 9 // 10
train, val = data[:n], data[n:]
vocab = len(chars)


def get_batch(split):
    d = train if split == "train" else val
    ix = torch.randint(len(d) - block, (batch,))
    x = torch.stack([d[i : i + block] for i in ix])
    y = torch.stack([d[i + 1 : i + 1 + block] for i in ix])
    return x, y


class Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.ln_1 = nn.LayerNorm(n_embd)
        self.c_attn = nn.Linear(n_embd, 3 * n_embd)
        self.c_proj = nn.Linear(n_embd, n_embd)
        self.ln_2 = nn.LayerNorm(n_embd)
        self.c_fc = nn.Linear(n_embd, 4 * n_embd)
        self.mlp_proj = nn.Linear(4 * n_embd, n_embd)

    def forward(self, x):
        B, T, C = x.shape
        q, k, v = self.c_attn(self.ln_1(x)).split(n_embd, dim=2)
        q, k, v = (t.view(B, T, n_head, C // n_head).transpose(1, 2) for t in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.c_proj(y.transpose(1, 2).contiguous().view(B, T, C))
        return x + self.mlp_proj(F.gelu(self.c_fc(self.ln_2(x)), approximate="tanh"))


class GPT(nn.Module):
    def __init__(self):
        super().__init__()
        self.wte = nn.Embedding(vocab, n_embd)
        self.wpe = nn.Embedding(block, n_embd)
        self.h = nn.ModuleList(Block() for _ in range(n_layer))
        self.ln_f = nn.LayerNorm(n_embd)
        for name, p_ in self.named_parameters():
            if p_.dim() == 2:
                std = 0.02 / math.sqrt(2 * n_layer) if name.endswith("proj.weight") else 0.02
                nn.init.normal_(p_, 0.0, std)
            elif name.endswith("bias"):
                nn.init.zeros_(p_)

    def forward(self, idx, targets=None):
        x = self.wte(idx) + self.wpe(torch.arange(idx.shape[1]))
        for b in self.h:
            x = b(x)
        logits = self.ln_f(x) @ self.wte.weight.t()
        loss = None if targets is None else F.cross_entropy(logits.view(-1, vocab), targets.view(-1))
        return logits, loss


model = GPT()
decay = [p_ for p_ in model.parameters() if p_.dim() >= 2]
no_decay = [p_ for p_ in model.parameters() if p_.dim() < 2]
opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}],
                        lr=lr, betas=(0.9, 0.99), eps=1e-8)


def get_lr(it):
    if it < warmup:
        return lr * (it + 1) / (warmup + 1)
    if it > decay_iters:
        return min_lr
    r = (it - warmup) / (decay_iters - warmup)
    return min_lr + 0.5 * (1 + math.cos(math.pi * r)) * (lr - min_lr)


@torch.no_grad()
def estimate():
    model.eval()
    out = {}
    for s in ("train", "val"):
        out[s] = sum(model(*get_batch(s))[1].item() for _ in range(a.eval_iters)) / a.eval_iters
    model.train()
    return out


train_s, t0, last = 0.0, time.time(), None
for it in range(a.iters):
    ts = time.perf_counter()
    for g in opt.param_groups:
        g["lr"] = get_lr(it)
    x, y = get_batch("train")
    _, loss = model(x, y)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
    loss_v = loss.item()
    train_s += time.perf_counter() - ts
    step = it + 1
    if step % a.eval_interval == 0 or step == a.iters:
        last = estimate()
        print(f"step {step}: train {last['train']:.4f} val {last['val']:.4f}", flush=True)
print(json.dumps({"impl": "pytorch", "torch": torch.__version__, "steps": a.iters, "elapsed_s": time.time() - t0,
                  "train_s": train_s, "train_it_per_s": a.iters / train_s,
                  "final_train_loss": last["train"], "final_val_loss": last["val"],
                  "params": sum(p_.numel() for p_ in model.parameters())}))
