"""Load generator for OpenAI-compatible servers: the real `openai` client, streaming chat
completions of a fixed length, at several concurrencies.

    python load.py BASE_URL MODEL --concurrency 1,4,8,16,32 [--tokens 128] [--rounds 2]
    python load.py BASE_URL MODEL --shared-prefix 1000 [--requests 6]
    python load.py BASE_URL MODEL --concurrency 1,8 --json-schema bench/serve/schema.json

Per concurrency C: C clients each send `rounds` requests back to back (a closed loop);
every request asks for exactly `tokens` tokens (ignore_eos). Reported: aggregate generated
tokens per second (all tokens / wall time of the level), time to first token p50/p99
(request sent → first content chunk), inter-token latency p50 (gaps between content
chunks), and the decode-phase aggregate (concurrency / mean inter-token gap). Prints one JSON object per level on stdout.

--json-schema FILE: every request asks for JSON valid against the schema in FILE
(`response_format` of type `json_schema`, which both lamina and llama-server take); with
ignore_eos a reply still ends where the schema's JSON does.

--shared-prefix N: requests one after another with the same N-token system prompt and a
different question each; reports each request's time to first token.
"""
import argparse
import asyncio
import json
import statistics
import time

from openai import AsyncOpenAI

QUESTIONS = ["Tell me about {}.".format(t) for t in (
    "rivers", "the moon", "bread", "owls", "glass", "winter", "bicycles", "tea", "maps", "bees",
    "lighthouses", "clocks", "music", "stones", "deserts", "the sea")]


def pct(xs, p):
    if not xs:
        return None
    xs = sorted(xs)
    k = (len(xs) - 1) * p / 100
    f = int(k)
    c = min(f + 1, len(xs) - 1)
    return xs[f] + (xs[c] - xs[f]) * (k - f)


SCHEMA = None  # set by --json-schema


async def one(client, model, messages, tokens, ttfts, itls):
    t0 = time.perf_counter()
    first, last, n = None, None, 0
    # Without a schema every reply runs to max_tokens; with one it ends where the JSON ends
    # (llama-server refuses to generate past a complete grammar).
    extra = {"extra_body": {"ignore_eos": True}} if SCHEMA is None else {}
    if SCHEMA is not None:
        extra["response_format"] = {"type": "json_schema", "json_schema": {"name": "bench", "schema": SCHEMA, "strict": True}}
    stream = await client.chat.completions.create(
        model=model, messages=messages, max_tokens=tokens, temperature=0, stream=True,
        stream_options={"include_usage": True}, **extra)
    usage = None
    async for chunk in stream:
        if chunk.usage is not None:
            usage = chunk.usage
        for ch in chunk.choices:
            if ch.delta.content:
                now = time.perf_counter()
                if first is None:
                    first = now
                    ttfts.append(now - t0)
                else:
                    itls.append(now - last)
                last = now
                n += 1
    return usage.completion_tokens if usage else n


async def level(base, model, c, tokens, rounds):
    client = AsyncOpenAI(base_url=base, api_key="none", max_retries=2, timeout=600)
    ttfts, itls = [], []

    async def worker(i):
        total = 0
        for r in range(rounds):
            q = QUESTIONS[(i + r) % len(QUESTIONS)]
            total += await one(client, model, [{"role": "user", "content": f"{q} (client {i}, round {r})"}], tokens, ttfts, itls)
        return total

    t0 = time.perf_counter()
    done = await asyncio.gather(*(worker(i) for i in range(c)))
    wall = time.perf_counter() - t0
    await client.close()
    return {"concurrency": c, "requests": c * rounds, "tokens": sum(done), "seconds": round(wall, 3),
            "tok_s": round(sum(done) / wall, 1), "ttft_p50": pct(ttfts, 50), "ttft_p99": pct(ttfts, 99),
            "itl_p50": pct(itls, 50),
            # While every stream decodes, C streams each emitting a token per mean gap: the
            # decode-phase aggregate, comparable to `lamina bench`'s batched decode (which
            # times decode steps only, no prefill, no client).
            "decode_tok_s": round(c / statistics.mean(itls), 1) if itls else None}


async def shared_prefix(base, model, n_tokens, requests, tokens):
    client = AsyncOpenAI(base_url=base, api_key="none", max_retries=2, timeout=600)
    # ~10 tokens per rule with SmolLM2's tokenizer; the server's usage tells the real count.
    system = " ".join(f"Rule {i}: answer with care and keep to the facts." for i in range(n_tokens // 11))
    out = []
    for r in range(requests):
        ttfts, itls = [], []
        msgs = [{"role": "system", "content": system}, {"role": "user", "content": QUESTIONS[r % len(QUESTIONS)]}]
        await one(client, model, msgs, tokens, ttfts, itls)
        out.append(ttfts[0])
    await client.close()
    return {"shared_prefix_tokens": n_tokens, "ttft": out, "later_over_first": max(out[1:]) / out[0]}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("base")
    ap.add_argument("model")
    ap.add_argument("--concurrency", default="1,4,8,16,32")
    ap.add_argument("--tokens", type=int, default=128)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--shared-prefix", type=int, default=0)
    ap.add_argument("--requests", type=int, default=6)
    ap.add_argument("--json-schema", default=None)
    a = ap.parse_args()
    global SCHEMA
    if a.json_schema:
        with open(a.json_schema) as f:
            SCHEMA = json.load(f)
    if a.shared_prefix:
        print(json.dumps(asyncio.run(shared_prefix(a.base, a.model, a.shared_prefix, a.requests, 16))), flush=True)
        return
    # Warm-up (model load, first-touch of caches): not measured.
    asyncio.run(level(a.base, a.model, 1, 8, 1))
    for c in [int(x) for x in a.concurrency.split(",")]:
        r = asyncio.run(level(a.base, a.model, c, a.tokens, a.rounds))
        r["json_schema"] = a.json_schema
        print(json.dumps(r), flush=True)


if __name__ == "__main__":
    main()
