"""The official `openai` Python client's Responses API against a running `lamina serve`.

Run by crates/lamina-cli/tests/serve_apis.rs with the venv serve_support sets up:
    python check_responses.py BASE_URL API_KEY MODEL [--tools]
Without --tools: plain and streamed responses, instructions and input items,
previous_response_id, store=false, and the errors. With --tools: a function call round
trip (streamed and not) and text.format with a JSON schema, which need the chat
pipeline's tool calls and structured output. Every check asserts; one line per check,
exit non-zero on the first failure.
"""
import json
import sys

import openai
from openai import OpenAI

base, key, model = sys.argv[1:4]
tools_mode = "--tools" in sys.argv[4:]
client = OpenAI(base_url=base, api_key=key, max_retries=0, timeout=120)
USER = {"role": "user", "content": "Name three colours."}


def check(name, cond, detail=""):
    if not cond:
        print(f"FAIL {name}: {detail}")
        sys.exit(1)
    print(f"ok   {name}")


def raises(name, exc, fn, status):
    try:
        fn()
    except exc as e:
        check(name, e.status_code == status and isinstance(e.body, dict) and "message" in e.body, (e.status_code, e.body))
        return e
    check(name, False, "no error raised")


def usage_adds_up(u):
    return u.total_tokens == u.input_tokens + u.output_tokens and u.input_tokens > 0 and u.output_tokens > 0


WEATHER = {
    "type": "function",
    "name": "get_weather",
    "description": "The current weather in a city.",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"], "additionalProperties": False},
    "strict": True,
}

if not tools_mode:
    # A plain response: text input, greedy, one output message.
    r = client.responses.create(model=model, input="Name three colours.", max_output_tokens=24, temperature=0)
    check("plain response", r.object == "response" and r.model == model and r.id.startswith("resp_") and r.output_text, r)
    check("status", r.status in ("completed", "incomplete"), r.status)
    check("one message item", len(r.output) == 1 and r.output[0].type == "message" and r.output[0].role == "assistant", r.output)
    check("usage adds up", usage_adds_up(r.usage) and r.usage.output_tokens <= 24, r.usage)
    if r.status == "incomplete":
        check("incomplete names max_output_tokens", r.incomplete_details.reason == "max_output_tokens" and r.usage.output_tokens == 24, r)
    greedy = r.output_text

    # The same as message items with typed parts: the same prompt, the same greedy text.
    items = [{"role": "user", "content": [{"type": "input_text", "text": "Name three colours."}]}]
    r2 = client.responses.create(model=model, input=items, max_output_tokens=24, temperature=0)
    check("items input equals text input", r2.output_text == greedy, (r2.output_text, greedy))

    # Instructions are a system message: the same prompt and greedy text as chat
    # completions with that system message; echoed back.
    r3 = client.responses.create(model=model, instructions="Answer in French.", input="Name three colours.", max_output_tokens=8, temperature=0)
    c3 = client.chat.completions.create(model=model, messages=[{"role": "system", "content": "Answer in French."}, USER], max_tokens=8, temperature=0)
    check("instructions are a system message", r3.usage.input_tokens == c3.usage.prompt_tokens and r3.output_text == c3.choices[0].message.content, (r3, c3))
    check("instructions echoed", r3.instructions == "Answer in French.", r3.instructions)

    # Streamed: typed events numbered from 0, deltas that add up to the whole text.
    events = list(client.responses.create(model=model, input="Name three colours.", max_output_tokens=24, temperature=0, stream=True))
    types = [e.type for e in events]
    check("stream sequence numbers", [e.sequence_number for e in events] == list(range(len(events))), types)
    check("stream opens", types[:4] == ["response.created", "response.in_progress", "response.output_item.added", "response.content_part.added"], types)
    check("stream closes", types[-4:] == ["response.output_text.done", "response.content_part.done", "response.output_item.done", "response." + r.status], types)
    deltas = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    done = next(e for e in events if e.type == "response.output_text.done")
    last = events[-1].response
    check("stream deltas equal the whole", deltas == done.text == greedy == last.output_text, (deltas, done.text, greedy))
    check("stream usage", last.usage.output_tokens == r.usage.output_tokens and usage_adds_up(last.usage), last.usage)
    item_ids = {e.item_id for e in events if e.type == "response.output_text.delta"}
    check("stream item id", item_ids == {last.output[0].id}, (item_ids, last.output))

    # The client's stream helper accumulates the same events into the same response (it
    # needs `response.completed`: an answer that ends by itself).
    whole = client.responses.create(model=model, input="Say hello.", max_output_tokens=64, temperature=0)
    check("a natural end is completed", whole.status == "completed" and whole.incomplete_details is None and whole.usage.output_tokens < 64, whole)
    with client.responses.stream(model=model, input="Say hello.", max_output_tokens=64, temperature=0) as s:
        for _ in s:
            pass
        final = s.get_final_response()
    check("stream helper", final.output_text == whole.output_text and final.status == "completed", final)

    # previous_response_id: the second turn's prompt is the whole conversation (first
    # question, first answer, second question), as chat completions sees it sent in full,
    # and the prefix cache serves the carried part.
    first = client.responses.create(model=model, input="My name is Ada. Please remember it.", max_output_tokens=16, temperature=0)
    second = client.responses.create(model=model, input="What is my name?", previous_response_id=first.id, max_output_tokens=16, temperature=0)
    convo = [{"role": "user", "content": "My name is Ada. Please remember it."}, {"role": "assistant", "content": first.output_text},
             {"role": "user", "content": "What is my name?"}]
    full = client.chat.completions.create(model=model, messages=convo, max_tokens=16, temperature=0)
    check("previous_response_id carries the conversation", second.usage.input_tokens == full.usage.prompt_tokens, (second.usage, full.usage))
    check("the same answer as the whole conversation", second.output_text == full.choices[0].message.content, (second.output_text, full))
    check("previous_response_id is echoed", second.previous_response_id == first.id, second.previous_response_id)
    check("the carried turn is cached", second.usage.input_tokens_details.cached_tokens > 0, second.usage)
    third = client.responses.create(model=model, input="And again?", previous_response_id=second.id, max_output_tokens=4, temperature=0)
    check("chains of turns", third.usage.input_tokens > second.usage.input_tokens + second.usage.output_tokens, (second.usage, third.usage))

    # store=false: nothing to continue from.
    unstored = client.responses.create(model=model, input="Hi", max_output_tokens=4, store=False)
    check("store=false is echoed", unstored.store is False, unstored)
    raises("an unstored response cannot be continued (404)", openai.NotFoundError,
           lambda: client.responses.create(model=model, input="x", previous_response_id=unstored.id, max_output_tokens=4), 404)
    e = raises("unknown previous_response_id 404", openai.NotFoundError,
               lambda: client.responses.create(model=model, input="x", previous_response_id="resp_doesnotexist", max_output_tokens=4), 404)
    check("404 names the parameter", e.body.get("param") == "previous_response_id", e.body)
    raises("bad temperature 400", openai.BadRequestError, lambda: client.responses.create(model=model, input="x", temperature=5), 400)
    raises("unknown model 404", openai.NotFoundError, lambda: client.responses.create(model="no-such-model", input="x"), 404)
    raises("image input 400", openai.BadRequestError, lambda: client.responses.create(
        model=model, input=[{"role": "user", "content": [{"type": "input_image", "image_url": "http://x/y.png"}]}]), 400)
    print("all checks passed")
    sys.exit(0)

# Function call round trip: the model calls the tool, the result goes back as a
# function_call_output item, and the conversation continues, by previous_response_id and by
# sending the items again.
q = "What is the weather in Paris? Use the get_weather tool."
r = client.responses.create(model=model, input=q, tools=[WEATHER], tool_choice={"type": "function", "name": "get_weather"}, temperature=0, parallel_tool_calls=False)
calls = [o for o in r.output if o.type == "function_call"]
check("a function call", len(calls) == 1 and calls[0].name == "get_weather" and calls[0].call_id, r.output)
args = json.loads(calls[0].arguments)
check("arguments match the schema", isinstance(args, dict) and set(args) == {"city"} and isinstance(args["city"], str), args)
result = {"type": "function_call_output", "call_id": calls[0].call_id, "output": json.dumps({"city": args["city"], "temperature_c": 18})}
r2 = client.responses.create(model=model, previous_response_id=r.id, input=[result], tools=[WEATHER], max_output_tokens=32, temperature=0)
check("the answer after the call", r2.output_text and r2.usage.input_tokens > r.usage.input_tokens, r2)
again = [{"role": "user", "content": q}, calls[0].model_dump(exclude_none=True), result]
r3 = client.responses.create(model=model, input=again, tools=[WEATHER], max_output_tokens=32, temperature=0)
check("the same round trip with the items sent again", r3.output_text == r2.output_text, (r3.output_text, r2.output_text))

# Streamed call: the item added as a function_call, argument deltas that add up.
events = list(client.responses.create(model=model, input=q, tools=[WEATHER], tool_choice="required", temperature=0, parallel_tool_calls=False, stream=True))
added = [e.item for e in events if e.type == "response.output_item.added" and e.item.type == "function_call"]
deltas = "".join(e.delta for e in events if e.type == "response.function_call_arguments.delta")
done = [e for e in events if e.type == "response.function_call_arguments.done"]
check("streamed function call", len(added) == 1 and added[0].name == "get_weather" and len(done) == 1 and done[0].arguments == deltas, events)
check("streamed arguments parse", set(json.loads(deltas)) == {"city"}, deltas)

# text.format with a JSON schema: the text parses and validates.
schema = {"type": "object", "properties": {"colours": {"type": "array", "items": {"type": "string"}, "minItems": 3, "maxItems": 3}},
          "required": ["colours"], "additionalProperties": False}
r = client.responses.create(model=model, input="Name three colours as JSON.", temperature=0,
                            text={"format": {"type": "json_schema", "name": "colours", "schema": schema, "strict": True}})
v = json.loads(r.output_text)
check("text.format json_schema", set(v) == {"colours"} and len(v["colours"]) == 3 and all(isinstance(c, str) for c in v["colours"]), r.output_text)
print("all checks passed")
