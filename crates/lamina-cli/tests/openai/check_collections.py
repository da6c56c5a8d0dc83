"""The official `openai` Python client against `lamina serve`'s collections and the `rag`
extension of chat completions.

Run by crates/lamina-cli/tests/serve_collections.rs:
    python check_collections.py BASE_URL CHAT_MODEL COLLECTION KEYED_COLLECTION KEY
The collection holds the documents the Rust test posted (ids zorblat, kestrel, bread).
Every check asserts; one line per check, non-zero exit on the first failure.
"""
import sys

import openai
from openai import OpenAI

base, model, name, keyed, key = sys.argv[1:6]
client = OpenAI(base_url=base, api_key="unused", max_retries=0, timeout=300)
QUESTION = "What color is the zorblat fruit?"


def check(what, cond, detail=""):
    if not cond:
        print(f"FAIL {what}: {detail}")
        sys.exit(1)
    print(f"ok   {what}")


def raises(what, kind, status, fn):
    try:
        fn()
    except kind as e:
        check(what, e.status_code == status, f"status {e.status_code}: {e}")
        return e
    check(what, False, "no error raised")


# Custom paths through the client's own request machinery.
found = client.post(f"/collections/{name}/search", body={"query": QUESTION, "k": 2, "mode": "vector"}, cast_to=object)
check("search via client.post", found["data"][0]["source"] == "zorblat", found)
check("search k", len(found["data"]) == 2, found)
listed = client.get("/collections", cast_to=object)
check("list hides the keyed collection without its key", [c["name"] for c in listed["data"]] == [name], listed)
raises("unknown collection is NotFoundError", openai.NotFoundError, 404, lambda: client.get("/collections/nope", cast_to=object))

# RAG, whole.
r = client.chat.completions.create(
    model=model, messages=[{"role": "user", "content": QUESTION}], temperature=0, max_tokens=48, extra_body={"rag": {"collection": name, "k": 3}}
)
extra = r.model_extra or {}
rag, citations = extra.get("rag"), extra.get("citations")
check("rag report beside the message", rag is not None and rag["collection"] == name, extra)
check("the first source is the document holding the answer", rag["sources"][0]["source"] == "zorblat" and rag["sources"][0]["n"] == 1, rag)
check("sources carry their text and range", "purple" in rag["sources"][0]["text"] and rag["sources"][0]["byte_range"]["end"] > 0, rag)
check("not nothing_relevant", rag["nothing_relevant"] is False, rag)
numbers = {s["n"]: s for s in rag["sources"]}
content = r.choices[0].message.content
check("citations are sources the answer cites", all(numbers.get(c["n"]) == c and str(c["n"]) in content for c in citations) and (not citations or "[" in content), (content, citations))
check("a real answer", r.usage.completion_tokens > 0 and r.choices[0].message.content, r)
# The 135M model copies its answer from the source without writing [1]: its text shows the grounding.
check("the answer holds the document's fact", "purple" in content.lower(), content)
print("     answer:", repr(r.choices[0].message.content), "cited:", [c["n"] for c in citations])

# RAG, streamed: one chunk with citations after the last choice chunk, before usage.
stream = client.chat.completions.create(
    model=model,
    messages=[{"role": "user", "content": QUESTION}],
    temperature=0,
    max_tokens=48,
    stream=True,
    stream_options={"include_usage": True},
    extra_body={"rag": {"collection": name, "k": 3}},
)
chunks = list(stream)
with_citations = [i for i, c in enumerate(chunks) if (c.model_extra or {}).get("rag") is not None]
check("one citations chunk", len(with_citations) == 1, [c.model_extra for c in chunks])
at = with_citations[0]
check("citations chunk after every choice finished", any(ch.finish_reason for c in chunks[:at] for ch in c.choices) and not chunks[at].choices, at)
check("usage chunk last", chunks[-1].usage is not None and at == len(chunks) - 2, chunks[-1])
streamed = chunks[at].model_extra
check("streamed sources as whole", streamed["rag"]["sources"] == rag["sources"], streamed)
text = "".join(ch.delta.content or "" for c in chunks for ch in c.choices)
check("streamed text", len(text) > 0, chunks)

# Nothing relevant: answered without the model.
r = client.chat.completions.create(
    model=model,
    messages=[{"role": "user", "content": "Who won the football world cup in 1994?"}],
    extra_body={"rag": {"collection": name, "threshold": 0.5}},
)
extra = r.model_extra
check("nothing relevant", extra["rag"]["nothing_relevant"] is True and extra["citations"] == [], extra)
check("says it does not know", "don't know" in r.choices[0].message.content, r.choices[0].message.content)
check("model not called", r.usage.completion_tokens == 0, r.usage)

# Bad rag fields, and keys.
raises("rag unknown field", openai.BadRequestError, 400, lambda: client.chat.completions.create(
    model=model, messages=[{"role": "user", "content": "x"}], extra_body={"rag": {"collection": name, "top_k": 3}}))
raises("rag unknown collection", openai.NotFoundError, 404, lambda: client.chat.completions.create(
    model=model, messages=[{"role": "user", "content": "x"}], extra_body={"rag": {"collection": "nope"}}))
wrong = OpenAI(base_url=base, api_key="wrong-key", max_retries=0, timeout=300)
raises("rag keyed collection with another key", openai.PermissionDeniedError, 403, lambda: wrong.chat.completions.create(
    model=model, messages=[{"role": "user", "content": QUESTION}], extra_body={"rag": {"collection": keyed}}))
right = OpenAI(base_url=base, api_key=key, max_retries=0, timeout=300)
r = right.chat.completions.create(model=model, messages=[{"role": "user", "content": "What is the vault code?"}], max_tokens=8,
                                  extra_body={"rag": {"collection": keyed}})
check("rag keyed collection with its key", r.model_extra["rag"]["sources"][0]["source"] == "code", r.model_extra)
print("all collection checks passed")
