"""sentence-transformers side of bench/embed/run.sh: embeds TEXTS (one per line) with
all-MiniLM-L6-v2 on THREADS CPU threads, batch 32, and writes the vectors to OUT.npy.

    python st_embed.py MODEL_DIR TEXTS OUT THREADS
Prints one line: `sentence-transformers: N sentences, T tokens in S s: X sentences/s, Y tokens/s`.
Tokens are the word pieces the model reads (with [CLS]/[SEP], at most 256 per text).
"""
import sys
import time

import numpy as np
import torch
from sentence_transformers import SentenceTransformer

model_dir, texts_path, out, threads = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
torch.set_num_threads(threads)
texts = [l.rstrip("\n").rstrip("\r") for l in open(texts_path, encoding="utf-8")]
model = SentenceTransformer(model_dir, device="cpu")
assert model.max_seq_length == 256, model.max_seq_length
tokens = sum(min(len(ids), 256) for ids in model.tokenizer(texts, add_special_tokens=True)["input_ids"])
model.encode(texts[:64], batch_size=32)  # warm-up
t0 = time.perf_counter()
vectors = model.encode(texts, batch_size=32, convert_to_numpy=True, normalize_embeddings=False)
secs = time.perf_counter() - t0
np.save(out, vectors.astype(np.float32))
print(f"sentence-transformers: {len(texts)} sentences, {tokens} tokens in {secs:.3f} s: "
      f"{len(texts) / secs:.1f} sentences/s, {tokens / secs:.1f} tokens/s")
