"""The official `anthropic` Python client against a running `lamina serve`'s /v1/messages.

Run by crates/lamina-cli/tests/serve_apis.rs with the venv serve_support sets up:
    python check_anthropic.py BASE_URL API_KEY MODEL [--tools] [--via-gateway]
(BASE_URL without /v1: the client adds it.) crates/lamina-cli/tests/gateway.rs runs it
against `lamina gateway` with --via-gateway: a gateway's message_start cannot know the
usage yet (the backend may change mid-stream), so the full usage is checked on
message_delta instead. Without --tools: plain and streamed
messages, stop sequences, prompt caching, authentication and errors. With --tools: a
tool-use round trip, streamed and not, which needs the chat pipeline's tool calls. Every
check asserts; one line per check, exit non-zero on the first failure.
"""
import json
import sys

import anthropic
from anthropic import Anthropic

base, key, model = sys.argv[1:4]
tools_mode = "--tools" in sys.argv[4:]
via_gateway = "--via-gateway" in sys.argv[4:]
client = Anthropic(base_url=base, api_key=key, max_retries=0, timeout=120)
USER = [{"role": "user", "content": "Name three colours."}]
# This client version has no `temperature` argument; the API still takes the field, and
# greedy answers make the stream comparable with the whole answer.
GREEDY = {"extra_body": {"temperature": 0}}


def check(name, cond, detail=""):
    if not cond:
        print(f"FAIL {name}: {detail}")
        sys.exit(1)
    print(f"ok   {name}")


def raises(name, exc, fn, status, kind):
    try:
        fn()
    except exc as e:
        body = e.body if isinstance(e.body, dict) else {}
        ok = e.status_code == status and body.get("type") == "error" and body.get("error", {}).get("type") == kind and body["error"].get("message")
        check(name, ok, (e.status_code, e.body))
        return e
    check(name, False, "no error raised")


WEATHER = {
    "name": "get_weather",
    "description": "The current weather in a city.",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}

if not tools_mode:
    # A plain message, greedy, with a system prompt.
    m = client.messages.create(model=model, max_tokens=24, system="You are brief.", messages=USER, **GREEDY)
    check("plain message", m.type == "message" and m.role == "assistant" and m.model == model and m.id.startswith("msg_"), m)
    check("one text block", len(m.content) == 1 and m.content[0].type == "text" and m.content[0].text, m.content)
    check("stop_reason", m.stop_reason in ("end_turn", "max_tokens") and m.stop_sequence is None, m.stop_reason)
    u = m.usage
    check("usage", u.input_tokens > 0 and 0 < u.output_tokens <= 24 and u.cache_read_input_tokens is not None, u)
    if m.stop_reason == "max_tokens":
        check("max_tokens means the limit was reached", u.output_tokens == 24, u)
    greedy = m.content[0].text

    # System as text blocks equals the string form.
    m2 = client.messages.create(model=model, max_tokens=24, system=[{"type": "text", "text": "You are brief."}],
                                messages=[{"role": "user", "content": [{"type": "text", "text": "Name three colours."}]}], **GREEDY)
    check("blocks equal strings", m2.content[0].text == greedy, (m2.content, greedy))

    # Streamed with the client's helper: the same text, stop reason and usage.
    with client.messages.stream(model=model, max_tokens=24, system="You are brief.", messages=USER, **GREEDY) as s:
        text = "".join(s.text_stream)
        final = s.get_final_message()
    check("stream equals whole", text == greedy and final.content[0].text == greedy, (text, greedy))
    check("stream stop_reason and usage", final.stop_reason == m.stop_reason and final.usage.output_tokens == u.output_tokens, final)

    # The raw events, in Anthropic's order.
    events = list(client.messages.create(model=model, max_tokens=8, messages=USER, **GREEDY, stream=True))
    types = [e.type for e in events]
    check("stream event order", types[0] == "message_start" and types[1] == "content_block_start" and types[-3:] == ["content_block_stop", "message_delta", "message_stop"], types)
    check("stream deltas", all(e.delta.type == "text_delta" for e in events if e.type == "content_block_delta") and types.count("content_block_delta") >= 1, types)
    if via_gateway:
        d = events[-2].usage
        check("message_delta usage", d.input_tokens is not None and d.input_tokens + (d.cache_read_input_tokens or 0) > 0 and d.output_tokens > 0, d)
        fu = final.usage
        check("streamed input usage equals the whole", fu.input_tokens + (fu.cache_read_input_tokens or 0) == u.input_tokens + u.cache_read_input_tokens, (fu, u))
    else:
        check("message_start usage", events[0].message.usage.input_tokens > 0, events[0])
    check("message_start has no stop_reason", events[0].message.stop_reason is None, events[0])

    # A stop sequence taken from the greedy text: the text ends before it, and the answer says which.
    words = greedy.split()
    word = words[1] if len(words) > 1 else greedy[:3]
    m3 = client.messages.create(model=model, max_tokens=24, system="You are brief.", messages=USER, **GREEDY, stop_sequences=["zzzz", word])
    t = m3.content[0].text
    check("stop_sequence", m3.stop_reason == "stop_sequence" and m3.stop_sequence == word and word not in t and greedy.startswith(t), (word, m3))

    # Prompt caching: a repeated long system prompt is read from the cache the second time.
    system = " ".join(f"Rule {i}: be kind and precise." for i in range(80))
    a = client.messages.create(model=model, max_tokens=4, system=system, messages=[{"role": "user", "content": "Hello!"}], **GREEDY)
    b = client.messages.create(model=model, max_tokens=4, system=system, messages=[{"role": "user", "content": "Hi again!"}], **GREEDY)
    total_a = a.usage.input_tokens + a.usage.cache_read_input_tokens
    check("cache_read_input_tokens", b.usage.cache_read_input_tokens >= total_a - 64 and b.usage.cache_read_input_tokens > 0, (a.usage, b.usage))
    check("input_tokens are what was computed", b.usage.input_tokens < a.usage.input_tokens, (a.usage, b.usage))

    # Errors, as the client raises them, in Anthropic's shape.
    raises("max_tokens 0 is 400", anthropic.BadRequestError, lambda: client.messages.create(model=model, max_tokens=0, messages=USER), 400, "invalid_request_error")
    raises("temperature above 1 is 400", anthropic.BadRequestError,
           lambda: client.messages.create(model=model, max_tokens=4, messages=USER, extra_body={"temperature": 1.5}), 400, "invalid_request_error")
    raises("unknown model 404", anthropic.NotFoundError, lambda: client.messages.create(model="claude-nope", max_tokens=4, messages=USER), 404, "not_found_error")
    raises("image block 400", anthropic.BadRequestError, lambda: client.messages.create(model=model, max_tokens=4, messages=[
        {"role": "user", "content": [{"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "AAAA"}}]}]), 400, "invalid_request_error")
    raises("too long 400", anthropic.BadRequestError,
           lambda: client.messages.create(model=model, max_tokens=4, messages=[{"role": "user", "content": "word " * 3000}]), 400, "invalid_request_error")
    bad = Anthropic(base_url=base, api_key="wrong-key", max_retries=0)
    raises("wrong key 401", anthropic.AuthenticationError, lambda: bad.messages.create(model=model, max_tokens=4, messages=USER), 401, "authentication_error")
    print("all checks passed")
    sys.exit(0)

# Tool use round trip: the model calls the tool, the result goes back as a tool_result
# block, and the answer continues.
q = [{"role": "user", "content": "What is the weather in Paris? Use the get_weather tool."}]
m = client.messages.create(model=model, max_tokens=128, messages=q, tools=[WEATHER], tool_choice={"type": "tool", "name": "get_weather", "disable_parallel_tool_use": True}, **GREEDY)
uses = [b for b in m.content if b.type == "tool_use"]
check("a tool_use block", m.stop_reason == "tool_use" and len(uses) == 1 and uses[0].name == "get_weather" and uses[0].id, m)
check("input matches the schema", isinstance(uses[0].input, dict) and isinstance(uses[0].input.get("city"), str), uses[0].input)
result = {"type": "tool_result", "tool_use_id": uses[0].id, "content": json.dumps({"city": uses[0].input["city"], "temperature_c": 18})}
convo = q + [{"role": "assistant", "content": [b.model_dump(exclude_none=True) for b in m.content]}, {"role": "user", "content": [result]}]
m2 = client.messages.create(model=model, max_tokens=32, messages=convo, tools=[WEATHER], **GREEDY)
check("the answer after the tool result", m2.content and m2.content[0].type == "text" and m2.content[0].text and m2.usage.input_tokens > 0, m2)

# Streamed tool use: input_json_delta fragments that the client assembles into the input.
with client.messages.stream(model=model, max_tokens=128, messages=q, tools=[WEATHER], tool_choice={"type": "any", "disable_parallel_tool_use": True}, **GREEDY) as s:
    events = list(s)
    final = s.get_final_message()
partial = "".join(e.delta.partial_json for e in events if e.type == "content_block_delta" and e.delta.type == "input_json_delta")
streamed = [b for b in final.content if b.type == "tool_use"]
check("streamed tool_use", final.stop_reason == "tool_use" and len(streamed) == 1 and json.loads(partial) == streamed[0].input, (partial, final))
print("all checks passed")
