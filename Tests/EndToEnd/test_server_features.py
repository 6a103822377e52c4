"""Server features users expect from vLLM: --api-key with OpenAI's 401, /tokenize, /detokenize and
/version, a bounded queue answering 429 with Retry-After, /health 503 while the engine is down, and
/metrics in Prometheus text whose counters match the requests sent."""
import concurrent.futures
import os
import signal
import time

import openai
import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

import psutil_free as proc_tools
from conftest import RouterProcess, serving

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
    for path in ["/health", "/metrics", "/version"]:
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


def scrape(router):
    r = requests.get(router.base + "/metrics", timeout=10)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    samples = {}
    for family in text_string_to_metric_families(r.text):
        for sample in family.samples:
            labels = tuple(sorted((k, v) for k, v in sample.labels.items() if k != "model_name"))
            samples[(sample.name, labels)] = sample.value
    return samples


def test_metrics_parse_and_count_the_requests_sent(keyed):
    name = model_of(keyed)
    before = scrape(keyed)
    client = openai.OpenAI(base_url=keyed.base + "/v1", api_key=KEY, max_retries=0, timeout=120)
    prompt_tokens = completion_tokens = 0
    for index in range(3):
        done = client.completions.create(model=name, prompt=f"Count to {index + 3}:", max_tokens=5, temperature=0,
                                         extra_body={"ignore_eos": True})
        prompt_tokens += done.usage.prompt_tokens
        completion_tokens += done.usage.completion_tokens
    stream = client.chat.completions.create(model=name, messages=[{"role": "user", "content": "Hi"}], max_tokens=4,
                                            stream=True, stream_options={"include_usage": True},
                                            extra_body={"ignore_eos": True})
    for chunk in stream:
        if chunk.usage:
            prompt_tokens += chunk.usage.prompt_tokens
            completion_tokens += chunk.usage.completion_tokens
    after = scrape(keyed)

    def delta(name, **labels):
        key = (name, tuple(sorted(labels.items())))
        return after[key] - before.get(key, 0)

    assert delta("vllm:prompt_tokens_total") == prompt_tokens
    assert delta("vllm:generation_tokens_total") == completion_tokens == 19
    assert delta("vllm:request_success_total", finished_reason="length") == 4
    for histogram in ["vllm:time_to_first_token_seconds", "vllm:e2e_request_latency_seconds",
                      "vllm:request_queue_time_seconds"]:
        assert delta(histogram + "_count") == 4, histogram
        assert delta(histogram + "_bucket", le="+Inf") == 4, histogram
    assert delta("vllm:inter_token_latency_seconds_count") == completion_tokens - 4
    assert delta("tessel:worker_step_seconds_count", rank="0") >= 5
    assert after[("vllm:num_requests_running", ())] == 0 and after[("vllm:num_requests_waiting", ())] == 0
    assert 0 <= after[("vllm:kv_cache_usage_perc", ())] <= 1
    assert after[("vllm:prefix_cache_hits_total", ())] <= after[("vllm:prefix_cache_queries_total", ())]
    assert ("vllm:num_preemptions_total", ()) in after


def test_a_burst_past_the_queue_gets_429_with_retry_after_and_the_rest_complete(model_path):
    with serving("--model", str(model_path), "--max-num-seqs", "1", "--max-queued-requests", "2") as router:
        name = requests.get(router.base + "/v1/models", timeout=10).json()["data"][0]["id"]
        body = {"model": name, "prompt": "Tell me a story.", "max_tokens": 48, "ignore_eos": True}

        def send(_):
            return requests.post(router.base + "/v1/completions", json=body, timeout=120)

        with concurrent.futures.ThreadPoolExecutor(12) as pool:
            responses = list(pool.map(send, range(12)))
        statuses = [r.status_code for r in responses]
        refused = [r for r in responses if r.status_code == 429]
        served = [r for r in responses if r.status_code == 200]
        assert len(refused) + len(served) == 12, statuses
        assert len(refused) >= 1 and len(served) >= 3, statuses
        for r in refused:
            assert r.headers["retry-after"] == "1"
            assert r.json()["error"]["code"] == "queue_full"
        for r in served:
            assert r.json()["usage"]["completion_tokens"] == 48
        # The official client sees a RateLimitError for the same answer.
        client = openai.OpenAI(base_url=router.base + "/v1", api_key="-", max_retries=0, timeout=120)
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            futures = [pool.submit(client.completions.create, model=name, prompt="Go on.", max_tokens=48,
                                   extra_body={"ignore_eos": True}) for _ in range(8)]
            errors = [f.exception() for f in futures]
        assert any(isinstance(e, openai.RateLimitError) for e in errors), errors
        assert all(e is None or isinstance(e, openai.RateLimitError) for e in errors), errors


def test_health_is_503_while_the_engine_is_down(model_path):
    with serving("--model", str(model_path)) as router:
        worker = proc_tools.children_named(router.proc.pid, "worker")[0]
        os.kill(worker, signal.SIGKILL)
        statuses = set()
        deadline = time.time() + 15
        while time.time() < deadline and 503 not in statuses:
            r = requests.get(router.base + "/health", timeout=5)
            statuses.add(r.status_code)
            if r.status_code == 503:
                assert r.json()["error"]["code"] == "workers_unavailable"
            time.sleep(0.02)
        assert 503 in statuses, statuses
        router.wait_healthy(timeout=90)


def test_cached_tokens_report_prefix_cache_hits(keyed):
    name = model_of(keyed)
    client = openai.OpenAI(base_url=keyed.base + "/v1", api_key=KEY, max_retries=0, timeout=120)
    prompt = "A long shared system prompt about the history of France. " * 12
    before = scrape(keyed)
    first = client.completions.create(model=name, prompt=prompt, max_tokens=2)
    again = client.completions.create(model=name, prompt=prompt, max_tokens=2)
    assert first.usage.prompt_tokens_details.cached_tokens == 0
    cached = again.usage.prompt_tokens_details.cached_tokens
    assert 0 < cached < again.usage.prompt_tokens, again.usage
    after = scrape(keyed)
    hits = after[("vllm:prefix_cache_hits_total", ())] - before[("vllm:prefix_cache_hits_total", ())]
    queries = after[("vllm:prefix_cache_queries_total", ())] - before[("vllm:prefix_cache_queries_total", ())]
    assert hits == cached and queries == first.usage.prompt_tokens + again.usage.prompt_tokens
