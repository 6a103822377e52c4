"""Bad input gets an OpenAI-shaped error with the right status, and nothing else is lost."""
import requests


def post(server, path, body=None, raw=None):
    if raw is not None:
        return requests.post(server.base + path, data=raw, headers={"content-type": "application/json"}, timeout=30)
    return requests.post(server.base + path, json=body, timeout=30)


def assert_error(response, status, param=None):
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) >= {"message", "type", "param", "code"}
    assert error["message"]
    if param is not None:
        assert error["param"] == param


def test_malformed_json(server):
    assert_error(post(server, "/v1/chat/completions", raw=b'{"model": "x", "messages": ['), 400)


def test_unknown_model(server):
    r = post(server, "/v1/chat/completions", {"model": "no-such-model", "messages": [{"role": "user", "content": "hi"}]})
    assert_error(r, 404)
    assert r.json()["error"]["code"] == "model_not_found"


def test_missing_messages(server, model_name):
    assert_error(post(server, "/v1/chat/completions", {"model": model_name}), 400, "messages")


def test_missing_prompt(server, model_name):
    assert_error(post(server, "/v1/completions", {"model": model_name}), 400, "prompt")


def test_prompt_longer_than_context(server, model_name):
    assert_error(post(server, "/v1/completions", {"model": model_name, "prompt": "hello " * 9000, "max_tokens": 4}), 400)


def test_bad_parameter_values(server, model_name):
    base = {"model": model_name, "prompt": "hi"}
    for field, value in [("temperature", -1), ("top_p", 0), ("top_p", 1.5), ("n", 0), ("max_tokens", 0),
                         ("max_tokens", "ten"), ("logprobs", 50), ("top_k", -5)]:
        assert_error(post(server, "/v1/completions", {**base, field: value}), 400, field)


def test_unknown_route_is_openai_shaped(server):
    assert_error(requests.get(server.base + "/v1/nothing", timeout=10), 404)


def test_server_still_serves_after_bad_requests(server, model_name):
    post(server, "/v1/completions", raw=b"not json")
    ok = post(server, "/v1/completions", {"model": model_name, "prompt": "Hello", "max_tokens": 2})
    assert ok.status_code == 200, ok.text
    assert ok.json()["usage"]["completion_tokens"] == 2


def test_poisoned_requests_do_not_touch_their_batch_mates(server, model_name):
    # Numbers a JSON double holds but the worker's 32-bit floats make infinite or zero: each is a
    # 400 naming its parameter, and honest requests running beside them answer as they do alone.
    from concurrent.futures import ThreadPoolExecutor

    honest = [{"model": model_name, "prompt": p, "max_tokens": 12, "temperature": 0}
              for p in ("The capital of France is", "One, two, three,", "Water boils at")]
    poisoned = [({"model": model_name, "prompt": "x", "max_tokens": 8, key: value}, key)
                for key, value in (("temperature", 1e39), ("top_p", 1e-50), ("repetition_penalty", 1e-50))]
    alone = [post(server, "/v1/completions", body).json()["choices"][0]["text"] for body in honest]
    with ThreadPoolExecutor(max_workers=len(honest) + len(poisoned)) as pool:
        bad = [pool.submit(post, server, "/v1/completions", body) for body, _ in poisoned]
        good = [pool.submit(post, server, "/v1/completions", body) for body in honest]
        for future, (_, key) in zip(bad, poisoned):
            assert_error(future.result(), 400, key)
        for future, expected in zip(good, alone):
            r = future.result()
            assert r.status_code == 200, r.text
            assert r.json()["choices"][0]["text"] == expected


def test_wrong_method_is_405_with_allow_and_head_answers(server):
    r = requests.delete(server.base + "/v1/models", timeout=10)
    assert_error(r, 405)
    assert r.headers["allow"] == "GET, HEAD"
    r = requests.get(server.base + "/v1/chat/completions", timeout=10)
    assert_error(r, 405)
    assert r.headers["allow"] == "POST"
    for path in ("/health", "/v1/models"):
        r = requests.head(server.base + path, timeout=10)
        assert r.status_code == 200 and r.content == b""


def test_responses_carry_a_request_id(server, model_name):
    r = post(server, "/v1/completions", {"model": model_name, "prompt": "Hi", "max_tokens": 2})
    assert r.status_code == 200 and r.headers["x-request-id"].startswith("req-")
    r = requests.post(server.base + "/v1/completions", json={"model": model_name}, timeout=30,
                      headers={"x-request-id": "trace-7"})
    assert_error(r, 400, "prompt")
    assert r.headers["x-request-id"] == "trace-7"
    # The access line names the request, its tokens and its time to first token; an error its message.
    r = requests.post(server.base + "/v1/completions", timeout=30, headers={"x-request-id": "trace-8"},
                      json={"model": model_name, "prompt": "Hi there", "max_tokens": 3, "ignore_eos": True})
    assert r.status_code == 200 and r.headers["x-request-id"] == "trace-8"
    import re
    import time
    for _ in range(20):
        lines = [line for line in server.output().splitlines() if "request_id=trace-" in line]
        if len(lines) >= 2:
            break
        time.sleep(0.1)
    served = next(line for line in lines if "request_id=trace-8" in line)
    assert "POST /v1/completions 200" in served, served
    usage = r.json()["usage"]
    assert f"prompt_tokens={usage['prompt_tokens']}" in served and "completion_tokens=3" in served, served
    assert re.search(r"ttft=\d+\.\d{3}", served) and re.search(r"seconds=\d+\.\d{3}", served), served
    refused = next(line for line in lines if "request_id=trace-7" in line)
    assert "POST /v1/completions 400" in refused and "error=" in refused and "prompt" in refused, refused


def test_oversize_body_is_413(server, model_name):
    body = b'{"model": "%s", "prompt": "%s"}' % (model_name.encode(), b"x" * (40 << 20))
    r = post(server, "/v1/completions", raw=body)
    assert_error(r, 413)
    assert r.json()["error"]["code"] == "request_too_large"
    assert post(server, "/v1/completions", {"model": model_name, "prompt": "ok", "max_tokens": 1}).status_code == 200


def test_idle_and_stalled_connections_are_closed(server):
    # Defaults: an idle keep-alive connection is closed after 10 s; a request's headers must be
    # complete 10 s after their first byte, however slowly they trickle.
    import socket
    import time
    from urllib.parse import urlparse

    address = urlparse(server.base)
    idle = socket.create_connection((address.hostname, address.port), timeout=20)
    stalled = socket.create_connection((address.hostname, address.port), timeout=20)
    started = time.monotonic()
    stalled.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nX-Slow: ")
    assert idle.recv(1024) == b"", "the server should close an idle connection without answering"
    idle_seconds = time.monotonic() - started
    stalled.settimeout(0.5)
    while True:
        try:
            assert stalled.recv(1024) == b""
            break
        except socket.timeout:
            stalled.sendall(b"a")  # activity does not extend the header clock
        assert time.monotonic() - started < 15, "trickled headers kept the connection open"
    stalled_seconds = time.monotonic() - started
    idle.close()
    stalled.close()
    assert 9 <= idle_seconds < 13, idle_seconds
    assert 9 <= stalled_seconds < 13, stalled_seconds
