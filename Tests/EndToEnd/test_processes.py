"""Process-level behaviour: start-up errors, worker supervision, clean shutdown."""
import os
import signal
import subprocess
import time

import psutil_free as proc_tools
import requests

from conftest import BIN_DIR, RouterProcess, free_port


def run_router(*args, timeout=60):
    return subprocess.run([str(BIN_DIR / "router"), *args], capture_output=True, text=True, timeout=timeout)


def test_missing_model_file_is_a_one_line_error(tmp_path):
    missing = tmp_path / "nope.gguf"
    r = run_router("--model", str(missing), "--port", str(free_port()))
    assert r.returncode != 0
    lines = [l for l in r.stderr.strip().splitlines() if l.strip()]
    assert str(missing) in lines[-1], r.stderr


def test_corrupt_model_file_names_the_file(tmp_path, model_path):
    broken = tmp_path / "broken.gguf"
    with open(model_path, "rb") as src:
        broken.write_bytes(src.read(4096))  # header and part of the metadata only
    r = run_router("--model", str(broken), "--port", str(free_port()))
    assert r.returncode != 0
    assert str(broken) in r.stderr, r.stderr


def _long_request_meets(router, action):
    """Starts a long completion, does `action(worker_pid)` 1.5 s into it; returns the response,
    the seconds from the action to the answer, the worker's pid and the model name."""
    import threading
    router.wait_healthy()
    workers = proc_tools.children_named(router.proc.pid, "worker")
    assert workers, "router should have spawned a worker process"
    name = requests.get(router.base + "/v1/models", timeout=10).json()["data"][0]["id"]
    body = {"model": name, "prompt": "Tell me a long story.", "max_tokens": 2000, "temperature": 0, "ignore_eos": True}
    result = {}
    t = threading.Thread(target=lambda: result.setdefault("r", requests.post(router.base + "/v1/completions", json=body, timeout=60)))
    t.start()
    time.sleep(1.5)
    action(workers[0])
    acted = time.time()
    t.join(timeout=45)
    assert not t.is_alive(), "request hung on a failed worker"
    return result["r"], time.time() - acted, workers[0], name


def _serves_again(router, name):
    router.wait_healthy(timeout=90)
    again = requests.post(router.base + "/v1/completions", json={"model": name, "prompt": "Hi", "max_tokens": 2}, timeout=60)
    assert again.status_code == 200, again.text


def test_dead_worker_fails_requests_instead_of_hanging(model_path):
    router = RouterProcess("--model", str(model_path), "--workers", "1")
    try:
        r, _, _, name = _long_request_meets(router, lambda pid: os.kill(pid, signal.SIGKILL))
        assert r.status_code >= 500, r.text
        assert "error" in r.json()
        # The router restarts its worker and serves again.
        _serves_again(router, name)
    finally:
        assert router.stop() == 0, router.output()[-3000:]


def test_stopped_worker_is_declared_down_within_seconds_and_restarted(model_path):
    """A worker alive but frozen inside a step (SIGSTOP: its heartbeat thread stops too) fails its
    requests within seconds, not at a fixed step timeout, and is replaced."""
    router = RouterProcess("--model", str(model_path), "--workers", "1")
    try:
        r, seconds, pid, name = _long_request_meets(router, lambda pid: os.kill(pid, signal.SIGSTOP))
        assert seconds < 6, f"took {seconds:.1f} s to notice"
        assert r.status_code == 503, r.text
        assert "heartbeat" in r.json()["error"]["message"], r.text
        _serves_again(router, name)
        assert pid not in proc_tools.children_named(router.proc.pid, "worker"), "the stopped worker should be replaced"
    finally:
        assert router.stop() == 0, router.output()[-3000:]


def test_template_errors_are_400s_naming_the_line(tmp_path, model_path):
    template = tmp_path / "strict.jinja"
    template.write_text("{% for m in messages %}\n"
                        "{% if m.role == 'robot' %}\n"
                        "{{ raise_exception('robots are not welcome') }}\n"
                        "{% endif %}{{ m.role }}: {{ m.content }}\n"
                        "{% endfor %}assistant:")
    router = RouterProcess("--model", str(model_path), "--chat-template", str(template))
    try:
        router.wait_healthy()
        name = requests.get(router.base + "/v1/models", timeout=10).json()["data"][0]["id"]
        bad = requests.post(router.base + "/v1/chat/completions", timeout=30, json={
            "model": name, "messages": [{"role": "robot", "content": "beep"}]})
        assert bad.status_code == 400, bad.text
        message = bad.json()["error"]["message"]
        assert "robots are not welcome" in message and "line 3" in message, message
        good = requests.post(router.base + "/v1/chat/completions", timeout=60, json={
            "model": name, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2})
        assert good.status_code == 200, good.text
    finally:
        assert router.stop() == 0, router.output()[-3000:]


def test_template_syntax_error_stops_start_up_naming_the_line(tmp_path, model_path):
    template = tmp_path / "broken.jinja"
    template.write_text("{% for m in messages %}\n{{ m.content }\n{% endfor %}")
    r = run_router("--model", str(model_path), "--chat-template", str(template), "--port", str(free_port()))
    assert r.returncode != 0
    assert str(template) in r.stderr and "line 2" in r.stderr, r.stderr


def test_unreachable_worker_endpoint_is_a_one_line_start_up_error(tmp_path, model_path):
    endpoint = f"ipc://{tmp_path}/nobody-listens.sock"
    r = run_router("--model", str(model_path), "--worker-endpoints", endpoint, "--worker-startup-timeout", "3",
                   "--port", str(free_port()), timeout=120)
    assert r.returncode != 0
    last = [l for l in r.stderr.strip().splitlines() if l.strip()][-1]
    assert last.startswith("router: workers did not start") and endpoint in last, r.stderr


def test_connections_over_the_limit_get_a_503_and_the_rest_are_served(model_path):
    import socket

    router = RouterProcess("--model", str(model_path), "--max-connections", "2", "--keep-alive-timeout", "30")
    held = []
    try:
        router.wait_healthy()
        time.sleep(0.5)  # the health probes' connections have closed
        held = [socket.create_connection(("127.0.0.1", router.port), timeout=10) for _ in range(2)]
        time.sleep(0.3)
        r = requests.get(router.base + "/v1/models", timeout=10)
        assert r.status_code == 503, r.text
        assert r.json()["error"]["code"] == "too_many_connections" and "2 connections" in r.json()["error"]["message"]
        held.pop().close()
        time.sleep(0.3)
        assert requests.get(router.base + "/v1/models", timeout=10).status_code == 200
    finally:
        for sock in held:
            sock.close()
        assert router.stop() == 0, router.output()[-3000:]
