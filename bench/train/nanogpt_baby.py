"""Our own small PyTorch GPT (nanoGPT's "baby GPT" recipe) for comparing training speed
with Lamina on the same data, same model shape and same optimiser settings.

GPT-2 architecture: LayerNorm with bias, learned positions, fused qkv, GELU (tanh), tied
head; 4 layers, 4 heads, 128 dims, block 64, batch 12, no dropout (Lamina has none).
AdamW lr 1e-3 (warm-up 100, cosine to 1e-4 at 2000), betas (0.9, 0.99), wd 0.1 on 2-D
weights, grad clip 1.0. Char-level vocabulary from the corpus; first 90 % train.

    python nanogpt_baby.py --data input.txt [--iters 2000] [--threads 2] [--seed N]

Prints one JSON line with iterations/s of training steps alone (evaluation excluded).

--twin replays Lamina's random draws (its SplitMix64 generator, the order in which it
initialises the weights, its batch and evaluation windows) so that both start from the
same weights and see the same batches: bench/train/twin.sh compares the two step by step.
--bias 0 drops every bias, as nanoGPT's default `bias=False` does.
"""
import argparse, json, math, time

import numpy as np
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
p.add_argument("--bias", type=int, default=1, help="1: biases in LayerNorm and Linear (GPT-2); 0: none (nanoGPT's default)")
p.add_argument("--twin", action="store_true",
               help="draw the initial weights, training batches and evaluation batches exactly as Lamina's "
                    "pretrain does for the same seed (with sample_tokens=0), for paired comparisons")
p.add_argument("--loss-log", help="write each step's training loss here, one per line")
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


MASK = (1 << 64) - 1


class SplitMix64:
    """Lamina's generator (lamina_model::trainable::SplitMix64), for --twin."""

    def __init__(self, seed):
        self.state = seed & MASK

    def u64(self, n):
        # Output k is mix(state + k·γ): the whole run of n draws at once.
        with np.errstate(over="ignore"):
            z = np.uint64(self.state) + np.arange(1, n + 1, dtype=np.uint64) * np.uint64(0x9E3779B97F4A7C15)
            z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
            z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        self.state = (self.state + n * 0x9E3779B97F4A7C15) & MASK
        return z ^ (z >> np.uint64(31))

    def below(self, n, count):
        return [(int(u) * n) >> 64 for u in self.u64(count)]

    def normal(self, count):
        u = (self.u64(2 * count) >> np.uint64(11)).astype(np.float64) * (1.0 / (1 << 53))
        return np.sqrt(-2.0 * np.log(1.0 - u[0::2])) * np.cos(2.0 * np.pi * u[1::2])


data_rng = SplitMix64(a.seed ^ 0x5EEDDA7A)
eval_rng = SplitMix64(a.seed ^ 0xE7A15A3B)


def get_batch(split, rng=None):
    d = train if split == "train" else val
    if a.twin:
        ix = rng.below(len(d) - block, batch)
    else:
        ix = torch.randint(len(d) - block, (batch,))
    x = torch.stack([d[i : i + block] for i in ix])
    y = torch.stack([d[i + 1 : i + 1 + block] for i in ix])
    return x, y


class Block(nn.Module):
    def __init__(self):
        super().__init__()
        b = bool(a.bias)
        self.ln_1 = nn.LayerNorm(n_embd, bias=b)
        self.c_attn = nn.Linear(n_embd, 3 * n_embd, bias=b)
        self.c_proj = nn.Linear(n_embd, n_embd, bias=b)
        self.ln_2 = nn.LayerNorm(n_embd, bias=b)
        self.c_fc = nn.Linear(n_embd, 4 * n_embd, bias=b)
        self.mlp_proj = nn.Linear(4 * n_embd, n_embd, bias=b)

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
        self.ln_f = nn.LayerNorm(n_embd, bias=bool(a.bias))
        for name, p_ in self.named_parameters():
            if p_.dim() == 2:
                std = 0.02 / math.sqrt(2 * n_layer) if name.endswith("proj.weight") else 0.02
                nn.init.normal_(p_, 0.0, std)
            elif name.endswith("bias"):
                nn.init.zeros_(p_)
        if a.twin:
            self.lamina_init()

    @torch.no_grad()
    def lamina_init(self):
        # Lamina draws wte, wpe, then per layer c_attn, attn c_proj, c_fc, mlp c_proj, each
        # in its stored [in, out] order (nn.Linear keeps [out, in]: transpose).
        rng = SplitMix64(a.seed)
        resid = 0.02 / math.sqrt(2 * n_layer)

        def draw(shape, std):
            return torch.from_numpy(rng.normal(math.prod(shape)) * std).reshape(shape).float()

        self.wte.weight.copy_(draw((vocab, n_embd), 0.02))
        self.wpe.weight.copy_(draw((block, n_embd), 0.02))
        for b in self.h:
            b.c_attn.weight.copy_(draw((n_embd, 3 * n_embd), 0.02).t())
            b.c_proj.weight.copy_(draw((n_embd, n_embd), resid).t())
            b.c_fc.weight.copy_(draw((n_embd, 4 * n_embd), 0.02).t())
            b.mlp_proj.weight.copy_(draw((4 * n_embd, n_embd), resid).t())

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
        out[s] = sum(model(*get_batch(s, eval_rng))[1].item() for _ in range(a.eval_iters)) / a.eval_iters
    model.train()
    return out


train_s, t0, last = 0.0, time.time(), None
loss_log = open(a.loss_log, "w") if a.loss_log else None
for it in range(a.iters):
    ts = time.perf_counter()
    for g in opt.param_groups:
        g["lr"] = get_lr(it)
    x, y = get_batch("train", data_rng)
    _, loss = model(x, y)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
    loss_v = loss.item()
    train_s += time.perf_counter() - ts
    if loss_log:
        print(f"{loss_v:.6f}", file=loss_log, flush=True)
    step = it + 1
    if step % a.eval_interval == 0 or step == a.iters:
        last = estimate()
        print(f"step {step}: train {last['train']:.4f} val {last['val']:.4f}", flush=True)
print(json.dumps({"impl": "pytorch", "torch": torch.__version__, "steps": a.iters, "elapsed_s": time.time() - t0,
                  "train_s": train_s, "train_it_per_s": a.iters / train_s,
                  "final_train_loss": last["train"], "final_val_loss": last["val"],
                  "params": sum(p_.numel() for p_ in model.parameters())}))
