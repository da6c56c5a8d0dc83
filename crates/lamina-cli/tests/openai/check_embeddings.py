"""The official `openai` Python client against `lamina serve` for /v1/embeddings.

Run by crates/lamina-cli/tests/embed.rs:
    python check_embeddings.py BASE_URL EMBED_MODEL CHAT_MODEL REFERENCE_JSONL
Every check asserts; one line per check, non-zero exit on the first failure.
"""
import base64
import json
import math
import struct
import sys

import openai
from openai import OpenAI

base, embed_model, chat_model, reference = sys.argv[1:5]
client = OpenAI(base_url=base, api_key="unused", max_retries=0, timeout=120)
cases = [json.loads(l) for l in open(reference, encoding="utf-8") if l.strip()]


def check(name, cond, detail=""):
    if not cond:
        print(f"FAIL {name}: {detail}")
        sys.exit(1)
    print(f"ok   {name}")


def cosine(a, b):
    dot = sum(x * y for x, y in zip(a, b))
    return dot / math.sqrt(sum(x * x for x in a) * sum(y * y for y in b))


def f32(v):
    """Values rounded to float32: JSON carries each in its shortest float32 form."""
    return list(struct.unpack(f"<{len(v)}f", struct.pack(f"<{len(v)}f", *v)))


def expect_error(name, status, param, **kwargs):
    try:
        client.embeddings.create(**kwargs)
    except openai.APIStatusError as e:
        body = e.body if isinstance(e.body, dict) else {}
        got = body.get("param")
        check(name, e.status_code == status and (param is None or (got or "").startswith(param)), f"{e.status_code} {body}")
        return
    check(name, False, "no error")


texts = [c["text"] for c in cases if c["text"]]
floats = client.embeddings.create(model=embed_model, input=texts, encoding_format="float")
check("one vector per input, in order", [d.index for d in floats.data] == list(range(len(texts))), floats.data[0].index)
check("384 dimensions", all(len(d.embedding) == 384 for d in floats.data))
worst = min(cosine(d.embedding, c["embedding"]) for d, c in zip(floats.data, [c for c in cases if c["text"]]))
check("vectors match sentence-transformers (cosine >= 0.999)", worst >= 0.999, worst)
want_tokens = sum(min(len(c["input_ids"]), 256) for c in cases if c["text"])
check("usage counts the word pieces read", floats.usage.prompt_tokens == want_tokens == floats.usage.total_tokens, floats.usage)
check("model echoed", floats.model == embed_model, floats.model)

raw = client.embeddings.create(model=embed_model, input=texts, encoding_format="base64")
decoded = [list(struct.unpack(f"<{384}f", base64.b64decode(d.embedding))) for d in raw.data]
check("base64 decodes to the float vectors", all(a == f32(b.embedding) for a, b in zip(decoded, floats.data)))
default = client.embeddings.create(model=embed_model, input=texts[0])
check("the client's default (base64, decoded by it) agrees", f32(default.data[0].embedding) == f32(floats.data[0].embedding))

ids = cases[0]["input_ids"]
by_ids = client.embeddings.create(model=embed_model, input=[ids], encoding_format="float")
check("token ids embed like their text", by_ids.data[0].embedding == floats.data[0].embedding)

chat = client.embeddings.create(model=chat_model, input=["Paris is the capital of France.", "word"], encoding_format="float")
check("a chat model embeds (unit vectors)", all(abs(sum(x * x for x in d.embedding) - 1) < 1e-3 for d in chat.data) and len(chat.data) == 2)

expect_error("empty input array", 400, "input", model=embed_model, input=[])
expect_error("empty string", 400, "input", model=embed_model, input="")
expect_error("wrong type", 400, "input", model=embed_model, input=[{"text": "x"}])
expect_error("mixed array", 400, "input", model=embed_model, input=["a", 5])
expect_error("too many tokens", 400, "input", model=embed_model, input=[[1996] * 300])
expect_error("token outside the vocabulary", 400, "input", model=embed_model, input=[[99999]])
expect_error("unknown model", 404, None, model="no-such-model", input="x")
expect_error("dimensions refused", 400, "dimensions", model=embed_model, input="x", dimensions=128)
expect_error("bad encoding_format", 400, "encoding_format", model=embed_model, input="x", encoding_format="int8")
print("all checks passed")
