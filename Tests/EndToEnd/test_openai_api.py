"""The OpenAI-compatible API, driven by the official openai client and by raw HTTP."""
import concurrent.futures
import json

import requests

QUESTION = [{"role": "user", "content": "What is the capital of France?"}]


def test_models_and_health(server, model_name):
    health = requests.get(server.base + "/health", timeout=10)
    assert health.status_code == 200
    models = requests.get(server.base + "/v1/models", timeout=10).json()
    assert models["object"] == "list"
    assert models["data"][0]["object"] == "model"
    assert model_name


def test_chat_greedy_answers_paris(client, model_name):
    reply = client.chat.completions.create(model=model_name, messages=QUESTION, temperature=0, max_tokens=32)
    choice = reply.choices[0]
    assert "Paris" in choice.message.content
    assert choice.message.role == "assistant"
    assert choice.finish_reason in ("stop", "length")
    assert reply.usage.prompt_tokens > 5
    assert reply.usage.completion_tokens > 0
    assert reply.usage.total_tokens == reply.usage.prompt_tokens + reply.usage.completion_tokens


def test_chat_streaming_equals_non_streaming(client, model_name):
    whole = client.chat.completions.create(model=model_name, messages=QUESTION, temperature=0, max_tokens=24)
    stream = client.chat.completions.create(model=model_name, messages=QUESTION, temperature=0, max_tokens=24,
                                            stream=True, stream_options={"include_usage": True})
    pieces, finish, usage = [], None, None
    for chunk in stream:
        if chunk.usage:
            usage = chunk.usage
        for c in chunk.choices:
            if c.delta.content:
                pieces.append(c.delta.content)
            if c.finish_reason:
                finish = c.finish_reason
    assert "".join(pieces) == whole.choices[0].message.content
    assert finish == whole.choices[0].finish_reason
    assert usage is not None and usage.completion_tokens == whole.usage.completion_tokens


def test_raw_sse_ends_with_done(server, model_name):
    body = {"model": model_name, "prompt": "The sky is", "max_tokens": 5, "temperature": 0, "stream": True}
    with requests.post(server.base + "/v1/completions", json=body, stream=True, timeout=60) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        lines = [l for l in r.iter_lines(decode_unicode=True) if l]
    assert lines[-1] == "data: [DONE]"
    for line in lines[:-1]:
        assert line.startswith("data: ")
        assert json.loads(line[6:])["object"] == "text_completion"


def test_completion_prompt_forms(client, model_name):
    text = client.completions.create(model=model_name, prompt="Once upon a time", max_tokens=8, temperature=0)
    assert text.choices[0].finish_reason == "length"
    assert text.usage.completion_tokens == 8
    batch = client.completions.create(model=model_name, prompt=["Once upon a time", "1, 2, 3,"], max_tokens=4, temperature=0)
    assert [c.index for c in batch.choices] == [0, 1]
    assert batch.choices[0].text == client.completions.create(
        model=model_name, prompt="Once upon a time", max_tokens=4, temperature=0).choices[0].text
    ids = client.completions.create(model=model_name, prompt=[1, 9690, 198], max_tokens=4, temperature=0)
    assert ids.usage.prompt_tokens == 3


def test_same_seed_same_output(client, model_name):
    args = dict(model=model_name, prompt="My favourite animal is", max_tokens=16, temperature=1.0, top_p=0.95)
    a = client.completions.create(seed=1234, **args).choices[0].text
    b = client.completions.create(seed=1234, **args).choices[0].text
    assert a == b
    others = {client.completions.create(seed=s, **args).choices[0].text for s in range(1, 5)}
    assert len(others | {a}) > 1, "different seeds should give different samples"


def test_stop_string_is_not_emitted(client, model_name):
    free = client.completions.create(model=model_name, prompt="1, 2, 3, 4,", max_tokens=12, temperature=0).choices[0].text
    assert " 6" in free, free
    cut = client.completions.create(model=model_name, prompt="1, 2, 3, 4,", max_tokens=12, temperature=0, stop=[" 6"])
    assert cut.choices[0].text == free[: free.index(" 6")]
    assert cut.choices[0].finish_reason == "stop"
    streamed = "".join(c.choices[0].text for c in client.completions.create(
        model=model_name, prompt="1, 2, 3, 4,", max_tokens=12, temperature=0, stop=[" 6"], stream=True) if c.choices)
    assert streamed == cut.choices[0].text


def test_n_choices(client, model_name):
    reply = client.chat.completions.create(model=model_name, messages=QUESTION, n=3, temperature=1.0, seed=7, max_tokens=8)
    assert sorted(c.index for c in reply.choices) == [0, 1, 2]


def test_echo_with_prompt_logprobs(client, model_name):
    reply = client.completions.create(model=model_name, prompt="The capital of France is", max_tokens=3,
                                      temperature=0, echo=True, logprobs=2)
    choice = reply.choices[0]
    assert choice.text.startswith("The capital of France is")
    lp = choice.logprobs
    prompt_len = reply.usage.prompt_tokens
    assert len(lp.tokens) == prompt_len + 3
    assert lp.token_logprobs[0] is None
    assert all(x <= 0 for x in lp.token_logprobs[1:])
    assert lp.top_logprobs[0] is None
    assert all(len(t) >= 1 for t in lp.top_logprobs[1:])
    assert "".join(lp.tokens) == choice.text
    # Greedy: each generated token is the top alternative.
    for tok, tops in zip(lp.tokens[prompt_len:], lp.top_logprobs[prompt_len:]):
        assert max(tops, key=tops.get) == tok


def test_chat_logprobs(client, model_name):
    reply = client.chat.completions.create(model=model_name, messages=QUESTION, max_tokens=4, temperature=0,
                                           logprobs=True, top_logprobs=3)
    content = reply.choices[0].logprobs.content
    assert len(content) == reply.usage.completion_tokens
    for entry in content:
        assert entry.logprob <= 0
        assert len(entry.top_logprobs) == 3
        assert entry.top_logprobs[0].logprob >= entry.top_logprobs[-1].logprob
        assert entry.token == entry.top_logprobs[0].token


def test_eight_concurrent_requests_all_complete(client, model_name):
    prompts = [f"Count from {i}:" for i in range(8)]
    sequential = {p: client.completions.create(model=model_name, prompt=p, max_tokens=10, temperature=0).choices[0].text
                  for p in prompts[:2]}
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda p: client.completions.create(
            model=model_name, prompt=p, max_tokens=10, temperature=0), prompts))
    assert len(results) == 8
    for p, r in zip(prompts, results):
        assert r.choices[0].finish_reason == "length"
        assert r.usage.completion_tokens == 10
        if p in sequential:
            assert r.choices[0].text == sequential[p], "batched greedy output must equal the unbatched one"
