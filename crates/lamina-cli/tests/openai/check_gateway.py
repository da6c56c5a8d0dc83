"""The official `openai` Python client against `lamina gateway` in front of two `lamina serve`s.

Run by crates/lamina-cli/tests/gateway.rs:
    python check_gateway.py BASE_URL API_KEY ROUTE [--backends a,b] [--chat-only]
--backends: the backend names the x-lamina-backend header may carry (default a,b);
--chat-only: skip /v1/completions (a route to an Anthropic backend has none).
Every check asserts; one line per check; non-zero exit on the first failure.
"""
import argparse

import openai
from openai import OpenAI

args = argparse.ArgumentParser()
args.add_argument("base")
args.add_argument("key")
args.add_argument("route")
args.add_argument("--backends", default="a,b")
args.add_argument("--chat-only", action="store_true")
args = args.parse_args()
base, key, route = args.base, args.key, args.route
backends = args.backends.split(",")
client = OpenAI(base_url=base, api_key=key, max_retries=0, timeout=120)
USER = [{"role": "user", "content": "Name three colours."}]


def check(name, cond, detail=""):
    if not cond:
        print(f"FAIL {name}: {detail}")
        raise SystemExit(1)
    print(f"ok   {name}")


ids = [m.id for m in client.models.list().data]
check("models.list shows the route", route in ids, ids)

r = client.chat.completions.create(model=route, messages=USER, max_tokens=24, temperature=0)
check("plain chat", r.model == route and r.choices[0].message.content, r)
u = r.usage
check("usage adds up", u.total_tokens == u.prompt_tokens + u.completion_tokens, u)
cost = (u.model_extra or {}).get("cost")
check("usage has the cost", isinstance(cost, float) and cost > 0, u)

raw = client.chat.completions.with_raw_response.create(model=route, messages=USER, max_tokens=24, temperature=0)
check("headers name the backend", raw.headers.get("x-lamina-backend") in backends, dict(raw.headers))

stream = client.chat.completions.create(model=route, messages=USER, max_tokens=24, temperature=0, stream=True, stream_options={"include_usage": True})
parts, last = [], None
for chunk in stream:
    last = chunk
    for c in chunk.choices:
        if c.delta.content:
            parts.append(c.delta.content)
check("stream text equals the plain answer", "".join(parts) == r.choices[0].message.content, "".join(parts))
check("stream ends with usage and cost", last is not None and last.usage is not None and (last.usage.model_extra or {}).get("cost", 0) > 0, last)

if not args.chat_only:
    comp = client.completions.create(model=route, prompt="The capital of France is", max_tokens=8, temperature=0)
    check("completions", comp.choices[0].text and comp.usage.completion_tokens > 0, comp)

try:
    client.chat.completions.create(model="no-such-route", messages=USER, max_tokens=4)
    check("unknown route refused", False, "no error")
except openai.NotFoundError as e:
    check("unknown route refused", "this gateway routes" in str(e), e)

try:
    OpenAI(base_url=base, api_key="wrong", max_retries=0).chat.completions.create(model=route, messages=USER, max_tokens=4)
    check("wrong key refused", False, "no error")
except openai.AuthenticationError:
    check("wrong key refused", True)

print("all checks passed")
