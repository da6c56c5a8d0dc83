"""The official `openai` Python client against a running `lamina serve`.

Run by crates/lamina-cli/tests/serve.rs with the venv that test sets up:
    python check_client.py BASE_URL API_KEY MODEL OTHER_MODEL
Every check asserts; the script prints one line per check and exits non-zero on the first
failure.
"""
import sys

import openai
from openai import OpenAI

base, key, model, other = sys.argv[1:5]
client = OpenAI(base_url=base, api_key=key, max_retries=0, timeout=120)
USER = [{"role": "user", "content": "Name three colours."}]


def check(name, cond, detail=""):
    if not cond:
        print(f"FAIL {name}: {detail}")
        sys.exit(1)
    print(f"ok   {name}")


# Models: both served models are listed, and each answers under its own name.
ids = sorted(m.id for m in client.models.list().data)
check("models.list", ids == sorted([model, other]), ids)
for m in (model, other):
    r = client.chat.completions.create(model=m, messages=USER, max_tokens=8, temperature=0)
    check(f"model {m} answers", r.model == m and r.choices[0].message.content, r)

# Plain chat, greedy: a reply, a finish reason, usage that adds up.
r = client.chat.completions.create(model=model, messages=USER, max_tokens=24, temperature=0)
c = r.choices[0]
check("plain chat", c.message.role == "assistant" and len(c.message.content) > 0, r)
check("finish_reason", c.finish_reason in ("stop", "length"), c.finish_reason)
u = r.usage
check("usage adds up", u.total_tokens == u.prompt_tokens + u.completion_tokens and 0 < u.completion_tokens <= 24, u)
greedy_text = c.message.content

# Streamed chat: the deltas concatenate to the same greedy text; the last chunk carries
# usage when asked for it.
stream = client.chat.completions.create(
    model=model, messages=USER, max_tokens=24, temperature=0, stream=True, stream_options={"include_usage": True}
)
text, finish, usage, roles = "", None, None, 0
for chunk in stream:
    if chunk.usage is not None:
        usage = chunk.usage
        check("usage chunk has no choices", chunk.choices == [], chunk)
    for ch in chunk.choices:
        roles += ch.delta.role == "assistant"
        text += ch.delta.content or ""
        finish = ch.finish_reason or finish
check("stream equals whole", text == greedy_text, (text, greedy_text))
check("stream role and finish", roles == 1 and finish == c.finish_reason, (roles, finish))
check("stream usage", usage is not None and usage.completion_tokens == u.completion_tokens, usage)

# n = 2 with sampling: two choices, indexed 0 and 1, usage counting both.
r = client.chat.completions.create(model=model, messages=USER, max_tokens=16, temperature=1.0, seed=5, n=2)
check("n=2", sorted(ch.index for ch in r.choices) == [0, 1], r.choices)
check("n=2 usage counts both choices", r.usage.completion_tokens >= 2 and all(ch.message.content for ch in r.choices), r.usage)

# Seeds: the same seed reproduces, another seed (very likely) differs.
def sample(seed):
    return client.chat.completions.create(
        model=model, messages=USER, max_tokens=24, temperature=1.0, seed=seed
    ).choices[0].message.content

a, b, d = sample(1234), sample(1234), sample(99)
check("seed reproduces", a == b, (a, b))
check("other seed differs", a != d, (a, d))

# Stop strings: the text ends before the stop string, which never appears.
word = greedy_text.split()[1] if len(greedy_text.split()) > 1 else greedy_text[:3]
r = client.chat.completions.create(model=model, messages=USER, max_tokens=24, temperature=0, stop=[word])
t = r.choices[0].message.content
check("stop string", word not in t and greedy_text.startswith(t) and r.choices[0].finish_reason == "stop", (word, t))

# Log-probabilities: one entry per token, alternatives sorted, chosen token = most likely.
r = client.chat.completions.create(model=model, messages=USER, max_tokens=8, temperature=0, logprobs=True, top_logprobs=3)
lp = r.choices[0].logprobs.content
check("logprobs per token", len(lp) == r.usage.completion_tokens, (len(lp), r.usage))
for e in lp:
    tops = [t.logprob for t in e.top_logprobs]
    check("top_logprobs", len(tops) == 3 and tops == sorted(tops, reverse=True) and e.logprob <= 0, e)
    check("greedy token is the most likely", e.token == e.top_logprobs[0].token, e)
check("logprob tokens spell the text", "".join(e.token for e in lp).startswith(r.choices[0].message.content[:5]), lp)

# logit_bias: +100 on one token forces it at every step.
r = client.completions.create(model=model, prompt="The weather today is", max_tokens=3, temperature=0, logprobs=0,
                              logit_bias={"1000": 100})
toks = r.choices[0].logprobs.tokens
check("logit_bias forces a token", len(toks) == 3 and len(set(toks)) == 1, toks)

# Prompt caching: a repeated long system prompt is served from the cache the second time.
system = " ".join(f"Rule {i}: be kind and precise." for i in range(80))
msgs = [{"role": "system", "content": system}, {"role": "user", "content": "Hello!"}]
first = client.chat.completions.create(model=model, messages=msgs, max_tokens=4, temperature=0)
again = client.chat.completions.create(model=model, messages=msgs[:1] + [{"role": "user", "content": "Hi again!"}], max_tokens=4, temperature=0)
cached = again.usage.prompt_tokens_details.cached_tokens
check("cached_tokens on a repeated system prompt", cached >= first.usage.prompt_tokens - 64 and cached > 0, (first.usage, again.usage))

# Legacy completions, plain and streamed.
r = client.completions.create(model=model, prompt="Once upon a time", max_tokens=12, temperature=0)
streamed = "".join(ch.choices[0].text for ch in client.completions.create(
    model=model, prompt="Once upon a time", max_tokens=12, temperature=0, stream=True) if ch.choices)
check("completions stream equals whole", streamed == r.choices[0].text and r.choices[0].text, (streamed, r.choices[0].text))

# Errors, as the client raises them.
def raises(name, exc, fn, status):
    try:
        fn()
    except exc as e:
        check(name, e.status_code == status and isinstance(e.body, dict) and "message" in e.body, (e.status_code, e.body))
        return
    check(name, False, "no error raised")

raises("unknown model 404", openai.NotFoundError, lambda: client.chat.completions.create(model="no-such-model", messages=USER), 404)
raises("path-like model 404", openai.NotFoundError, lambda: client.chat.completions.create(model="../../etc/passwd", messages=USER), 404)
raises("bad temperature 400", openai.BadRequestError, lambda: client.chat.completions.create(model=model, messages=USER, temperature=7), 400)
raises("too long 400", openai.BadRequestError, lambda: client.chat.completions.create(model=model, messages=[{"role": "user", "content": "word " * 3000}]), 400)
raises("max_tokens past the window 400", openai.BadRequestError, lambda: client.chat.completions.create(model=model, messages=USER, max_tokens=10 ** 6), 400)
bad = OpenAI(base_url=base, api_key="wrong-key", max_retries=0)
raises("wrong key 401", openai.AuthenticationError, lambda: bad.models.list(), 401)
print("all checks passed")
