"""Structured output and tool calls with the official `openai` Python client against a
running `lamina serve`, checked with the independent `jsonschema` validator.

Run by crates/lamina-cli/tests/structured.rs with the venv that test sets up:
    python check_structured.py BASE_URL MODEL
Every check asserts; one line per check; exits non-zero on the first failure.
"""
import json
import sys

import jsonschema
from openai import OpenAI

base, model = sys.argv[1:3]
client = OpenAI(base_url=base, api_key="none", max_retries=0, timeout=300)


def check(name, cond, detail=""):
    if not cond:
        print(f"FAIL {name}: {detail}")
        sys.exit(1)
    print(f"ok   {name}")


def obj(props, required=None):
    return {"type": "object", "properties": props, "required": list(props) if required is None else required, "additionalProperties": False}


S = {"type": "string", "maxLength": 24}
# 20 schemas of varied shape: nesting, arrays, enums, bounded numbers, optional fields.
SCHEMAS = {
    "person": ("a person", obj({"name": S, "age": {"type": "integer", "minimum": 0, "maximum": 120}})),
    "city": ("a city", obj({"city": S, "country": S, "population": {"type": "integer", "minimum": 0}})),
    "flag": ("whether water is wet", obj({"answer": {"type": "boolean"}})),
    "colour": ("your favourite colour", obj({"colour": {"enum": ["red", "green", "blue"]}})),
    "score": ("a test score", obj({"score": {"type": "number", "minimum": 0, "maximum": 1}})),
    "tags": ("tags for a blog post about tea", obj({"tags": {"type": "array", "items": S, "minItems": 1, "maxItems": 4}})),
    "point": ("a point in 3D", obj({"x": {"type": "number"}, "y": {"type": "number"}, "z": {"type": "number"}})),
    "book": ("a book", obj({"title": S, "author": obj({"first": S, "last": S}), "year": {"type": "integer", "minimum": 1400, "maximum": 2030}})),
    "optional": ("a user with an optional email", obj({"user": S, "email": S}, required=["user"])),
    "matrix": ("a 2x2 matrix", obj({"rows": {"type": "array", "items": {"type": "array", "items": {"type": "integer", "minimum": -9, "maximum": 9}, "minItems": 2, "maxItems": 2}, "minItems": 2, "maxItems": 2}})),
    "order": ("a shop order", obj({"id": {"type": "integer", "minimum": 1}, "items": {"type": "array", "items": obj({"sku": S, "qty": {"type": "integer", "minimum": 1, "maximum": 9}}), "maxItems": 3}})),
    "weekday": ("a day of the week", obj({"day": {"enum": ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]}, "holiday": {"type": "boolean"}})),
    "nullable": ("a pet that may have no name", obj({"species": S, "name": {"anyOf": [S, {"type": "null"}]}})),
    "const": ("a version record", obj({"kind": {"const": "version"}, "major": {"type": "integer", "minimum": 0, "maximum": 99}})),
    "temps": ("temperatures of a week", obj({"celsius": {"type": "array", "items": {"type": "number", "minimum": -50, "maximum": 60}, "minItems": 7, "maxItems": 7}})),
    "nested": ("a company", obj({"name": S, "ceo": obj({"name": S, "since": {"type": "integer", "minimum": 1900, "maximum": 2030}}), "public": {"type": "boolean"}})),
    "enum_list": ("three sizes", obj({"sizes": {"type": "array", "items": {"enum": ["S", "M", "L"]}, "minItems": 3, "maxItems": 3}})),
    "string_only": ("a greeting", {"type": "string", "maxLength": 40}),
    "top_array": ("two fruits", {"type": "array", "items": obj({"fruit": S}), "minItems": 2, "maxItems": 2}),
    "ratio": ("a ratio", obj({"num": {"type": "integer", "exclusiveMinimum": 0, "maximum": 100}, "den": {"type": "integer", "minimum": 1, "maximum": 100}, "note": S}, required=["num", "den"])),
}
check("twenty schemas", len(SCHEMAS) == 20)

for name, (what, schema) in SCHEMAS.items():
    r = client.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": f"Describe {what} as JSON."}],
        response_format={"type": "json_schema", "json_schema": {"name": name, "schema": schema, "strict": True}},
        temperature=1,
        max_tokens=300,
        seed=7,
    )
    c = r.choices[0]
    check(f"json_schema {name}: finished", c.finish_reason == "stop", c)
    try:
        value = json.loads(c.message.content)
        jsonschema.validate(value, schema)
        ok, detail = True, ""
    except Exception as e:  # noqa: BLE001 - the failure is the detail
        ok, detail = False, f"{e}: {c.message.content!r}"
    check(f"json_schema {name}: validates", ok, detail)

# json_object: any object; streamed, the pieces concatenate to one.
stream = client.chat.completions.create(model=model, messages=[{"role": "user", "content": "Some JSON about cats."}], response_format={"type": "json_object"}, temperature=1, max_tokens=200, stream=True, seed=3)
text = "".join(ch.choices[0].delta.content or "" for ch in stream if ch.choices)
check("json_object streamed parses to an object", isinstance(json.loads(text), dict), text)

# Tools.
CITY = {"type": "object", "properties": {"city": {"type": "string", "maxLength": 20}}, "required": ["city"], "additionalProperties": False}
ZONE = {"type": "object", "properties": {"zone": {"enum": ["CET", "JST", "UTC"]}}, "required": ["zone"], "additionalProperties": False}
TOOLS = [
    {"type": "function", "function": {"name": "get_weather", "description": "The current weather in a city", "parameters": CITY}},
    {"type": "function", "function": {"name": "get_time", "description": "The current time in a time zone", "parameters": ZONE}},
]
SCHEMA_OF = {"get_weather": CITY, "get_time": ZONE}


def worked(question, city, zone, answer):
    """One worked example: the question, both calls, their results, the answer."""
    return [
        {"role": "user", "content": question},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": f"call_w{city}", "type": "function", "function": {"name": "get_weather", "arguments": json.dumps({"city": city})}},
            {"id": f"call_t{city}", "type": "function", "function": {"name": "get_time", "arguments": json.dumps({"zone": zone})}}]},
        {"role": "tool", "tool_call_id": f"call_w{city}", "content": json.dumps({"sky": "snow", "celsius": -3})},
        {"role": "tool", "tool_call_id": f"call_t{city}", "content": json.dumps({"time": "14:05"})},
        {"role": "assistant", "content": answer},
    ]


# Two worked examples first: the model is small, and the turn it has to answer clearly needs both tools.
EXAMPLE = worked("What is the weather in Oslo, and what time is it in UTC?", "Oslo", "UTC", "In Oslo it snows at -3 °C, and it is 14:05 UTC.") + worked(
    "Weather in Tokyo and the time in JST, please.", "Tokyo", "JST", "Tokyo: snow, -3 °C; 14:05 JST.")
ASK = [{"role": "user", "content": "What is the weather in Paris, and what time is it in CET?"}]


def check_calls(label, calls, content, want_two):
    check(f"{label}: calls made", calls, calls)
    for c in calls:
        check(f"{label}: call id and type", c["id"].startswith("call_") and c["type"] == "function", c)
        check(f"{label}: known tool", c["name"] in SCHEMA_OF, c)
        args = json.loads(c["arguments"])
        jsonschema.validate(args, SCHEMA_OF[c["name"]])
        print(f"ok   {label}: {c['name']}({c['arguments']}) matches its schema")
    if want_two:
        check(f"{label}: both tools in one reply", sorted(c["name"] for c in calls) == ["get_time", "get_weather"], calls)
    check(f"{label}: no markup in content", "<tool_call" not in (content or "") and "</tool_call" not in (content or ""), content)


def whole(**kw):
    r = client.chat.completions.create(model=model, tools=TOOLS, max_tokens=160, **kw)
    m = r.choices[0].message
    calls = [{"id": t.id, "type": t.type, "name": t.function.name, "arguments": t.function.arguments} for t in (m.tool_calls or [])]
    return r.choices[0].finish_reason, calls, m.content


def streamed(**kw):
    calls, content, reason = {}, "", None
    for ch in client.chat.completions.create(model=model, tools=TOOLS, max_tokens=160, stream=True, **kw):
        if not ch.choices:
            continue
        ch = ch.choices[0]
        content += ch.delta.content or ""
        for t in ch.delta.tool_calls or []:
            if t.index not in calls:
                # The first delta of a call names it, before any argument.
                check("stream: a call starts with id, type and name", t.id and t.type == "function" and t.function.name, t)
                calls[t.index] = {"id": t.id, "type": t.type, "name": t.function.name, "arguments": ""}
            calls[t.index]["arguments"] += t.function.arguments or ""
        reason = ch.finish_reason or reason
    check("stream: call indexes count from 0", sorted(calls) == list(range(len(calls))), calls)
    return reason, [calls[i] for i in sorted(calls)], content


for label, fn in (("required", whole), ("required streamed", streamed)):
    reason, calls, content = fn(messages=EXAMPLE + ASK, tool_choice="required", temperature=0)
    check(f"{label}: finish_reason tool_calls", reason == "tool_calls", reason)
    check_calls(label, calls, content, want_two=True)

for label, fn in (("auto", whole), ("auto streamed", streamed)):
    reason, calls, content = fn(messages=EXAMPLE + ASK, tool_choice="auto", temperature=0)
    check(f"{label}: finish_reason tool_calls", reason == "tool_calls", (reason, content))
    check_calls(label, calls, content, want_two=True)

reason, calls, content = whole(messages=ASK, tool_choice={"type": "function", "function": {"name": "get_time"}}, temperature=1, seed=1)
check("named: finish_reason tool_calls", reason == "tool_calls", reason)
check("named: only the named tool", calls and all(c["name"] == "get_time" for c in calls), calls)
check_calls("named", calls, content, want_two=False)

# The tool results go back; the conversation continues with text.
r = client.chat.completions.create(model=model, tools=TOOLS, messages=EXAMPLE[:4], max_tokens=40, temperature=0, tool_choice="none")
check("tool results continue the conversation", r.choices[0].finish_reason in ("stop", "length") and r.choices[0].message.content, r)

reason, calls, content = whole(messages=ASK, tool_choice="none", temperature=0)
check("none: no calls", not calls and content, (calls, content))

print("all checks passed")
