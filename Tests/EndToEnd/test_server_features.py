"""Server features users expect from vLLM: --api-key with OpenAI's 401, /tokenize, /detokenize and
/version, a bounded queue answering 429 with Retry-After, /health 503 while the engine is down, and
/metrics in Prometheus text whose counters match the requests sent."""

import openai
import pytest
import requests

from conftest import RouterProcess

KEY = "tessel-test-key"


@pytest.fixture(scope="module")
def keyed(model_path):
    """A router with an API key, taken from TESSEL_API_KEY as vLLM takes VLLM_API_KEY."""
    router = RouterProcess("--model", str(model_path), "--activations", "f32", env={"TESSEL_API_KEY": KEY})
    try:
        router.wait_healthy()
        yield router
    finally:
        assert router.stop() == 0, router.output()[-3000:]


def keyed_get(router, path):
    return requests.get(router.base + path, headers={"Authorization": f"Bearer {KEY}"}, timeout=10)


def model_of(router):
    return keyed_get(router, "/v1/models").json()["data"][0]["id"]


def test_v1_needs_the_key_and_answers_401_in_openai_shape(keyed):
    for headers in [{}, {"Authorization": "Bearer wrong"}, {"Authorization": KEY}]:
        r = requests.get(keyed.base + "/v1/models", headers=headers, timeout=10)
        assert r.status_code == 401, (headers, r.text)
        error = r.json()["error"]
        assert set(error) >= {"message", "type", "param", "code"} and error["code"] == "invalid_api_key"
    # The official client (which refuses to send no key at all) gets its AuthenticationError.
    wrong = openai.OpenAI(base_url=keyed.base + "/v1", api_key="wrong", max_retries=0, timeout=60)
    with pytest.raises(openai.AuthenticationError) as raised:
        wrong.completions.create(model=model_of(keyed), prompt="Hi", max_tokens=2)
    assert raised.value.status_code == 401 and raised.value.code == "invalid_api_key"
    client = openai.OpenAI(base_url=keyed.base + "/v1", api_key=KEY, max_retries=0, timeout=60)
    done = client.completions.create(model=model_of(keyed), prompt="Hi", max_tokens=2)
    assert done.usage.completion_tokens == 2
    # Probes and scrapers carry no key, as in vLLM.
    for path in ["/health", "/version"]:
        assert requests.get(keyed.base + path, timeout=10).status_code == 200, path


def test_tokenize_detokenize_and_version(keyed):
    name = model_of(keyed)
    text = "The capital of France is"
    tokenized = requests.post(keyed.base + "/tokenize", json={"model": name, "prompt": text}, timeout=10).json()
    assert tokenized["count"] == len(tokenized["tokens"]) > 0
    assert tokenized["max_model_len"] > 0 and tokenized["token_strs"] is None
    # The same count the completion's usage reports for this prompt.
    client = openai.OpenAI(base_url=keyed.base + "/v1", api_key=KEY, max_retries=0, timeout=60)
    assert client.completions.create(model=name, prompt=text, max_tokens=1).usage.prompt_tokens == tokenized["count"]
    back = requests.post(keyed.base + "/detokenize", json={"model": name, "tokens": tokenized["tokens"]}, timeout=10).json()
    assert text in back["prompt"]
    chat = requests.post(keyed.base + "/tokenize", timeout=10, json={
        "model": name, "messages": [{"role": "user", "content": "Hi"}], "return_token_strs": True}).json()
    messages = [{"role": "user", "content": "Hi"}]
    usage = client.chat.completions.create(model=name, messages=messages, max_tokens=1).usage
    assert chat["count"] == usage.prompt_tokens and len(chat["token_strs"]) == chat["count"]
    bad = requests.post(keyed.base + "/detokenize", json={"tokens": [10**9]}, timeout=10)
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "tokens"
    version = requests.get(keyed.base + "/version", timeout=10).json()
    assert version["version"]
