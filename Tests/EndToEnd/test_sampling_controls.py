"""Sampling controls through the official client: logit_bias, min_p, seed with n > 1, user, and the
rule that a request field is honoured or refused with a 400 naming it, never ignored."""
import openai
import pytest
import requests

QUESTION = [{"role": "user", "content": "What is the capital of France?"}]


def token_id(server, text: str) -> int:
    tokens = requests.post(server.base + "/tokenize", json={"prompt": text, "add_special_tokens": False},
                           timeout=10).json()["tokens"]
    assert len(tokens) == 1, f"{text!r} is {len(tokens)} tokens"
    return tokens[0]


def test_logit_bias_minus_100_bans_the_greedy_token(client, server, model_name):
    first = client.completions.create(model=model_name, prompt="The capital of France is", max_tokens=1,
                                      temperature=0, logprobs=2)
    best, runner_up = list(first.choices[0].logprobs.top_logprobs[0].keys())
    assert first.choices[0].text == best
    banned = client.completions.create(model=model_name, prompt="The capital of France is", max_tokens=1,
                                       temperature=0, logit_bias={str(token_id(server, best)): -100})
    assert banned.choices[0].text == runner_up


def test_logit_bias_plus_100_forces_a_token(client, server, model_name):
    forced = token_id(server, " banana")
    reply = client.chat.completions.create(model=model_name, messages=QUESTION, max_tokens=4, temperature=0.8, seed=3,
                                           logit_bias={str(forced): 100})
    assert reply.choices[0].message.content == " banana" * 4


def test_min_p_1_keeps_only_the_most_likely_token(client, model_name):
    greedy = client.chat.completions.create(model=model_name, messages=QUESTION, max_tokens=16, temperature=0)
    top_only = client.chat.completions.create(model=model_name, messages=QUESTION, max_tokens=16, temperature=1.5,
                                              seed=11, extra_body={"min_p": 1.0})
    assert top_only.choices[0].message.content == greedy.choices[0].message.content


def test_seed_with_n_choices_replays_every_choice(client, model_name):
    def run():
        reply = client.chat.completions.create(model=model_name, messages=QUESTION, max_tokens=12, temperature=1.2,
                                               seed=7, n=3, user="alice")
        return [c.message.content for c in sorted(reply.choices, key=lambda c: c.index)]
    first = run()
    assert run() == first
    assert len(set(first)) > 1, "n choices with one seed must use distinct random streams"


@pytest.mark.parametrize("extra, param", [
    ({"frobnicate": 1}, "frobnicate"),
    ({"response_format": {"type": "json_schema", "json_schema": {"name": "h", "schema": {"type": "string", "format": "hostname"}}}},
     "response_format"),
    ({"structured_outputs": {"regex": "(a)\\1"}}, "structured_outputs"),
    # The default model's template writes no tool-call format.
    ({"tool_choice": "auto", "tools": [{"type": "function", "function": {"name": "f", "parameters": {}}}]},
     "tools"),
    ({"logit_bias": {"99999999": 5}}, "logit_bias"),
])
def test_a_field_not_honoured_is_a_400_naming_it(client, model_name, extra, param):
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model=model_name, messages=QUESTION, max_tokens=2, extra_body=extra)
    error = caught.value.body
    assert error["param"] == param, error
    assert param in error["message"]
