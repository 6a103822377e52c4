"""Tool calls and assistant prefill with the official client, on the default model under three
template families: its own (no tool format: --tool-call-parser hermes), Qwen2.5's (Hermes
markers) and Llama 3.1's (JSON calls)."""
import json

import jsonschema
import openai
import pytest
import requests

from conftest import REPO, serving

TEMPLATES = REPO / "Tests" / "JinjaTests" / "Fixtures" / "chat-templates"
FAMILIES = {
    "default": ["--tool-call-parser", "hermes"],
    "qwen": ["--chat-template", str(TEMPLATES / "Qwen-Qwen2.5-7B-Instruct.jinja")],
    "llama3": ["--chat-template", str(TEMPLATES / "meta-llama-Llama-3.1-8B-Instruct.jinja")],
}
WEATHER = [{"type": "function", "function": {
    "name": "get_weather", "description": "The weather in a city now.",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}]


@pytest.fixture(scope="module", params=sorted(FAMILIES))
def family(request, model_path):
    with serving("--model", str(model_path), "--activations", "f32", *FAMILIES[request.param]) as router:
        from openai import OpenAI
        client = OpenAI(base_url=router.base + "/v1", api_key="unused", max_retries=0, timeout=120)
        name = client.models.list().data[0].id
        yield request.param, router, client, name


def prompt_text(router, body) -> str:
    """The prompt a chat body renders to, as text."""
    tokens = requests.post(router.base + "/tokenize", json=body, timeout=10).json()["tokens"]
    return requests.post(router.base + "/detokenize", json={"tokens": tokens}, timeout=10).json()["prompt"]


def test_tool_results_go_back_through_the_template(family):
    """The standard round trip's second half: an assistant message with content null and
    tool_calls, then the tool's result, render and generate (it was a template error)."""
    _, router, client, name = family
    messages = [
        {"role": "user", "content": "What is the weather in Paris?"},
        {"role": "assistant", "content": None, "tool_calls": [{
            "id": "call_1", "type": "function",
            "function": {"name": "get_weather", "arguments": json.dumps({"city": "Paris"})}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "sunny, 21 C"},
    ]
    reply = client.chat.completions.create(model=name, messages=messages, tools=WEATHER, max_tokens=8, temperature=0)
    assert reply.choices[0].finish_reason in ("stop", "length", "tool_calls")
    assert "sunny, 21 C" in prompt_text(router, {"messages": messages, "tools": WEATHER})


def test_tool_choice_none_renders_no_tools(family):
    kind, router, _, _ = family
    messages = [{"role": "user", "content": "Hi"}]
    with_tools = requests.post(router.base + "/tokenize", json={"messages": messages, "tools": WEATHER}, timeout=10).json()
    without = requests.post(router.base + "/tokenize", json={"messages": messages, "tools": WEATHER,
                                                             "tool_choice": "none"}, timeout=10).json()
    plain = requests.post(router.base + "/tokenize", json={"messages": messages}, timeout=10).json()
    assert without["tokens"] == plain["tokens"]
    if kind == "default":
        assert with_tools["tokens"] == plain["tokens"], "SmolLM2's own template writes no tools"
    else:
        assert with_tools["count"] > plain["count"] + 10 and "get_weather" in prompt_text(router, {"messages": messages, "tools": WEATHER})


def test_continue_final_message_continues_the_assistant_turn(family):
    _, router, client, name = family
    question = [{"role": "user", "content": "What is the capital of France?"}]
    prefix = "The capital of France is"
    prefill = question + [{"role": "assistant", "content": prefix}]
    extra = {"continue_final_message": True, "add_generation_prompt": False}
    reply = client.chat.completions.create(model=name, messages=prefill, max_tokens=6, temperature=0, extra_body=extra)
    # The prompt ends with the prefix itself: no end of turn, no new assistant header.
    prompt = requests.post(router.base + "/tokenize", json={"messages": prefill, **extra}, timeout=10).json()
    assert prompt_text(router, {"messages": prefill, **extra}).endswith(prefix)
    continued = client.completions.create(model=name, prompt=prompt["tokens"], max_tokens=6, temperature=0)
    assert reply.choices[0].message.content == continued.choices[0].text
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model=name, messages=prefill, max_tokens=2,
                                       extra_body={"continue_final_message": True})
    assert caught.value.body["param"] == "continue_final_message"


def test_tools_without_a_tool_format_are_refused(client, model_name):
    """The default model's own template has no tool-call markers: without --tool-call-parser
    the server cannot parse calls, so it refuses instead of returning unparsed text."""
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model=model_name, messages=[{"role": "user", "content": "Hi"}],
                                       tools=WEATHER, max_tokens=2)
    assert caught.value.body["param"] == "tools"
    reply = client.chat.completions.create(model=model_name, messages=[{"role": "user", "content": "Hi"}],
                                           tools=WEATHER, tool_choice="none", max_tokens=2)
    assert reply.choices[0].message.tool_calls is None


CLOCK = {"type": "function", "function": {
    "name": "get_time", "description": "The local time in a time zone.",
    "parameters": {"type": "object", "properties": {"zone": {"type": "string", "enum": ["UTC", "CET", "PST"]}},
                   "required": ["zone"], "additionalProperties": False}}}
TOOLS = WEATHER + [CLOCK]
SCHEMAS = {tool["function"]["name"]: tool["function"]["parameters"] for tool in TOOLS}


def check_calls(calls):
    assert calls, "a forced choice must call a tool"
    for call in calls:
        assert call.type == "function" and call.id
        jsonschema.validate(json.loads(call.function.arguments), SCHEMAS[call.function.name])


def test_required_tool_choice_round_trips(family):
    """tool_choice 'required' is enforced by the grammar: the answer is calls of the given
    tools with arguments valid under their schemas; the calls and their results then go back
    through the template and the model answers."""
    _, _, client, name = family
    messages = [{"role": "user", "content": "What is the weather in Paris, and the time in CET?"}]
    reply = client.chat.completions.create(model=name, messages=messages, tools=TOOLS, tool_choice="required",
                                           max_tokens=120, temperature=0)
    choice = reply.choices[0]
    assert choice.finish_reason == "tool_calls"
    check_calls(choice.message.tool_calls)
    results = [{"role": "tool", "tool_call_id": call.id, "content": "sunny, 21 C" if call.function.name == "get_weather" else "14:05"}
               for call in choice.message.tool_calls]
    follow = client.chat.completions.create(model=name, messages=messages + [choice.message.model_dump(exclude_none=True)] + results,
                                            tools=TOOLS, tool_choice="none", max_tokens=12, temperature=0)
    assert follow.choices[0].finish_reason in ("stop", "length")
    assert follow.choices[0].message.content and follow.choices[0].message.tool_calls is None

    # Streamed, the same calls arrive as OpenAI streams them: id, type and name once per index, then arguments.
    stream = client.chat.completions.create(model=name, messages=messages, tools=TOOLS, tool_choice="required",
                                            max_tokens=120, temperature=0, stream=True)
    calls, finish = {}, None
    for chunk in stream:
        for delta_call in chunk.choices[0].delta.tool_calls or []:
            entry = calls.setdefault(delta_call.index, {"id": None, "name": None, "arguments": ""})
            if delta_call.id:
                assert entry["id"] is None, "the id comes once per call"
                entry["id"], entry["name"] = delta_call.id, delta_call.function.name
            entry["arguments"] += delta_call.function.arguments or ""
        finish = chunk.choices[0].finish_reason or finish
    assert finish == "tool_calls"
    assert [(c["name"], json.loads(c["arguments"])) for _, c in sorted(calls.items())] == \
        [(c.function.name, json.loads(c.function.arguments)) for c in choice.message.tool_calls]


def test_named_tool_choice_and_one_call_without_parallel_calls(family):
    _, _, client, name = family
    messages = [{"role": "user", "content": "Tell me about the weather in Oslo."}]
    named = client.chat.completions.create(model=name, messages=messages, tools=TOOLS, max_tokens=60, temperature=0.7, seed=3,
                                           tool_choice={"type": "function", "function": {"name": "get_time"}})
    calls = named.choices[0].message.tool_calls
    check_calls(calls)
    assert [call.function.name for call in calls] == ["get_time"]
    single = client.chat.completions.create(model=name, messages=messages, tools=TOOLS, tool_choice="required",
                                            parallel_tool_calls=False, max_tokens=120, temperature=0.9, seed=4)
    check_calls(single.choices[0].message.tool_calls)
    assert len(single.choices[0].message.tool_calls) == 1
