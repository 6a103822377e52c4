"""Tool calls and assistant prefill with the official client, on the default model under three
template families: its own (no tool format: --tool-call-parser hermes), Qwen2.5's (Hermes
markers) and Llama 3.1's (JSON calls)."""
import json

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
