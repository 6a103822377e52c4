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
