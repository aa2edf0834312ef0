"""Calls the gateway's /v1/embeddings with the official OpenAI Python client,
unchanged, and prints what it got as one JSON object on stdout.

Run by tests/tests/openai_client.rs: python3 openai_client.py <base_url> <model>
The Rust side checks the figures; this script only exercises the client.
"""

import json
import sys

import openai

base_url, model = sys.argv[1], sys.argv[2]
client = openai.OpenAI(base_url=base_url, api_key="unused", max_retries=0, timeout=60)
texts = ["The cat sits on the mat.", "A quick brown fox jumps over the lazy dog."]
out = {"version": openai.__version__}

# The client asks for base64 unless told otherwise, and decodes it itself.
r = client.embeddings.create(model=model, input=texts)
out["default"] = {
    "model": r.model,
    "indexes": [d.index for d in r.data],
    "vectors": [d.embedding for d in r.data],
    "prompt_tokens": r.usage.prompt_tokens,
    "total_tokens": r.usage.total_tokens,
}

r = client.embeddings.create(model=model, input=texts[0], encoding_format="float")
out["float"] = [d.embedding for d in r.data]

r = client.embeddings.create(model=model, input=texts[0], dimensions=64)
out["dimensions_64"] = [d.embedding for d in r.data]

# The model list and one model, as the client parses them.
out["models"] = [{"id": m.id, "object": m.object, "owned_by": m.owned_by} for m in client.models.list()]
out["model"] = client.models.retrieve(model).id

errors = {}
try:
    client.models.retrieve("no-such-model")
    errors["retrieve_unknown"] = {"class": None}
except openai.APIStatusError as e:
    errors["retrieve_unknown"] = {"class": type(e).__name__, "status": e.status_code}
for name, kwargs in {
    "unknown_model": {"model": "no-such-model", "input": "x"},
    "empty_input": {"model": model, "input": []},
    "dimensions_too_large": {"model": model, "input": "x", "dimensions": 100000},
}.items():
    try:
        client.embeddings.create(**kwargs)
        errors[name] = {"class": None}
    except openai.APIStatusError as e:
        errors[name] = {
            "class": type(e).__name__,
            "status": e.status_code,
            "message": str(e),
        }
out["errors"] = errors

print(json.dumps(out))
