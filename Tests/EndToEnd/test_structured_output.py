"""Structured output through the official client: every answer under a JSON schema parses and
validates with `jsonschema`, for the 50 committed real-world schemas, greedy and sampled; JSON
mode gives an object; vLLM's choice and regex hold; an unsupported keyword is a 400 naming it.

These run on a server of their own with the default engine (8-bit activations, as users get):
a hundred long constrained answers are the heaviest load of the suite, and run several times
faster there than on the session's exact-f32 server (66 s against 242 s on one machine); a
request may still take minutes on a slow machine, so the client waits up to 10 minutes (a hang
guard, not a speed target)."""
import concurrent.futures
import json
import pathlib
import re

import jsonschema
import openai
import pytest
import requests

from conftest import serving

SCHEMAS = sorted((pathlib.Path(__file__).parent / "fixtures" / "schemas").glob("*.json"))


@pytest.fixture(scope="module")
def structured_server(model_path):
    with serving("--model", str(model_path), "--workers", "1") as router:
        yield router


@pytest.fixture(scope="module")
def client(structured_server):
    from openai import OpenAI
    return OpenAI(base_url=structured_server.base + "/v1", api_key="unused", max_retries=0, timeout=600)


@pytest.fixture(scope="module")
def model_name(structured_server):
    return requests.get(structured_server.base + "/v1/models", timeout=10).json()["data"][0]["id"]


def ask(client, model_name, schema_path, sampled):
    schema = json.loads(schema_path.read_text())
    what = schema.get("title") or schema.get("description") or schema_path.stem.replace("-", " ")
    options = {"temperature": 0.8, "seed": 1234} if sampled else {"temperature": 0}
    reply = client.chat.completions.create(
        model=model_name, max_tokens=700,
        messages=[{"role": "user", "content": f"Write an example {what} as JSON."}],
        response_format={"type": "json_schema", "json_schema": {"name": schema_path.stem, "schema": schema, "strict": True}},
        **options)
    return schema, reply.choices[0]


def test_fifty_schemas_greedy_and_sampled_all_validate(client, model_name):
    assert len(SCHEMAS) >= 50, f"expected the 50 committed schemas in {SCHEMAS[0].parent if SCHEMAS else 'fixtures/schemas'}"
    jobs = [(path, sampled) for path in SCHEMAS for sampled in (False, True)]
    with concurrent.futures.ThreadPoolExecutor(max_workers=16) as pool:
        results = list(pool.map(lambda job: (job, ask(client, model_name, *job)), jobs))
    failures = []
    for (path, sampled), (schema, choice) in results:
        label = f"{path.stem} ({'sampled' if sampled else 'greedy'})"
        if choice.finish_reason != "stop":
            failures.append(f"{label}: finish_reason {choice.finish_reason}: {choice.message.content[:200]!r}")
            continue
        try:
            jsonschema.validate(json.loads(choice.message.content), schema)
        except (ValueError, jsonschema.ValidationError) as error:
            failures.append(f"{label}: {error}: {choice.message.content[:300]!r}")
    assert not failures, "\n".join(failures)


def test_json_object_mode_gives_an_object_also_streamed(client, model_name):
    messages = [{"role": "user", "content": "Describe a cat as JSON."}]
    whole = client.chat.completions.create(model=model_name, messages=messages, max_tokens=300, temperature=0,
                                           response_format={"type": "json_object"})
    assert whole.choices[0].finish_reason == "stop"
    assert isinstance(json.loads(whole.choices[0].message.content), dict)
    stream = client.chat.completions.create(model=model_name, messages=messages, max_tokens=300, temperature=0,
                                            response_format={"type": "json_object"}, stream=True)
    text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    assert text == whole.choices[0].message.content


def test_choice_and_regex(client, model_name):
    choices = ["Paris", "London", "Berlin"]
    for temperature in (0, 1.0):
        reply = client.chat.completions.create(
            model=model_name, messages=[{"role": "user", "content": "Which city is in France?"}], max_tokens=10,
            temperature=temperature, seed=5, extra_body={"structured_outputs": {"choice": choices}})
        assert reply.choices[0].message.content in choices
        assert reply.choices[0].finish_reason == "stop"
    pattern = r"[0-9]{3}-[0-9]{4}"
    reply = client.completions.create(model=model_name, prompt="Call me at", max_tokens=12, temperature=0.7, seed=2,
                                      extra_body={"structured_outputs": {"regex": pattern}})
    assert re.fullmatch(pattern, reply.choices[0].text), reply.choices[0].text


def test_unsupported_keyword_is_a_400_naming_it(client, model_name):
    schema = {"type": "object", "properties": {"tags": {"type": "array", "uniqueItems": True}}}
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(
            model=model_name, messages=[{"role": "user", "content": "x"}], max_tokens=5,
            response_format={"type": "json_schema", "json_schema": {"name": "t", "schema": schema}})
    error = caught.value.body
    assert error["param"].startswith("response_format"), error
    assert "uniqueItems" in error["message"] and "tags" in error["message"], error
