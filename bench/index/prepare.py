"""Texts for the index benchmark, one per line: the sentences of alpaca_5000's instructions,
inputs and outputs, tinyshakespeare's lines, then the sentences of the hh-rlhf dialogues,
deduplicated, in that order, until N.

    python3 prepare.py N OUT.txt
"""
import gzip
import json
import re
import sys

n, out = int(sys.argv[1]), sys.argv[2]
seen, texts = set(), []


def add(t):
    t = " ".join(t.split())
    if len(t) >= 12 and t not in seen:
        seen.add(t)
        texts.append(t)


for r in json.load(open("../shared/datasets/alpaca_5000.json", encoding="utf-8")):
    for field in ("instruction", "input", "output"):
        for s in re.split(r"(?<=[.!?])\s+|\n+", r[field]):
            add(s)
for line in open("../shared/datasets/tinyshakespeare.txt", encoding="utf-8"):
    add(line)
for line in gzip.open("../shared/datasets/hh_rlhf_harmless_base_test.jsonl.gz", "rt", encoding="utf-8"):
    r = json.loads(line)
    for field in ("chosen", "rejected"):
        for s in re.split(r"(?<=[.!?])\s+|\n+", r[field]):
            add(s.removeprefix("Human:").removeprefix("Assistant:"))
if len(texts) < n:
    sys.exit(f"only {len(texts)} distinct texts; ask for at most that many")
with open(out, "w", encoding="utf-8") as f:
    for t in texts[:n]:
        f.write(t + "\n")
print(f"{n} texts of {len(texts)} available")
