"""The fault table of the robustness issue, as tests against a real router and worker (default
engine): clients that go away, a long prompt beside short ones, a flood of unfinished
connections. Each checks the honest requests and the server's state afterwards."""
import os
import random
import socket
import threading
import time
from urllib.parse import urlparse

import pytest
import requests

from conftest import serving
import psutil_free as proc_tools


@pytest.fixture(scope="module")
def engine(model_path):
    with serving("--model", str(model_path), "--workers", "1", "--max-connections", "900") as router:
        yield router


@pytest.fixture(scope="module")
def name(engine):
    return requests.get(engine.base + "/v1/models", timeout=10).json()["data"][0]["id"]


def health(engine):
    return requests.get(engine.base + "/health", timeout=5).json()


def worker_cpu_seconds(engine) -> float:
    total = 0.0
    for pid in proc_tools.children_named(engine.proc.pid, "worker"):
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def wait_idle(engine, within: float) -> float:
    """Seconds until the scheduler holds nothing and no KV block is in use."""
    started = time.monotonic()
    while time.monotonic() - started < within:
        state = health(engine)
        if state["sequences_running"] == 0 and state["sequences_waiting"] == 0 and state["kv_blocks_used"] == 0:
            return time.monotonic() - started
        time.sleep(0.05)
    raise AssertionError(f"still busy {within} s after the client left: {health(engine)}")


def long_prompt(seed: int, words: int = 3000) -> str:
    rng = random.Random(seed)
    vocabulary = ["apple", "river", "stone", "cloud", "green", "house", "light", "table", "music", "paper"]
    return " ".join(rng.choice(vocabulary) for _ in range(words))


def send_and_hang_up(engine, body: dict, after: float) -> None:
    """Sends a request over a raw socket and closes it `after` seconds later, unanswered."""
    address = urlparse(engine.base)
    import json
    payload = json.dumps(body).encode()
    sock = socket.create_connection((address.hostname, address.port), timeout=10)
    sock.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                 + f"Content-Length: {len(payload)}\r\n\r\n".encode() + payload)
    time.sleep(after)
    sock.close()


@pytest.mark.parametrize("case", ["decode", "prefill", "prefill-stream", "n-many"])
def test_abandoned_work_stops_within_a_second(engine, name, case):
    body = {"model": name, "temperature": 0, "ignore_eos": True}
    if case == "decode":
        body.update(prompt="Tell me a story.", max_tokens=3000)
    elif case == "prefill":
        body.update(prompt=long_prompt(11), max_tokens=10)
    elif case == "prefill-stream":
        body.update(prompt=long_prompt(12), max_tokens=10, stream=True)
    else:
        body.update(prompt="Tell me a story.", max_tokens=3000, n=64, temperature=1)
    send_and_hang_up(engine, body, after=1.0)
    assert wait_idle(engine, within=1.0) <= 1.0
    # The worker has stopped computing too.
    before = worker_cpu_seconds(engine)
    time.sleep(0.5)
    assert worker_cpu_seconds(engine) - before < 0.1
    # And the server serves the next client as before.
    r = requests.post(engine.base + "/v1/completions", json={"model": name, "prompt": "Hi", "max_tokens": 2}, timeout=30)
    assert r.status_code == 200, r.text


def time_to_first_token(engine, name, prompt: str) -> float:
    started = time.monotonic()
    with requests.post(engine.base + "/v1/completions", stream=True, timeout=120, json={
            "model": name, "prompt": prompt, "max_tokens": 1, "stream": True, "temperature": 0}) as r:
        assert r.status_code == 200, r.text
        for line in r.iter_lines():
            if line.startswith(b"data: {"):
                return time.monotonic() - started
    raise AssertionError("no token streamed")


def test_short_request_is_not_held_back_by_a_long_prefill(engine, name):
    solo = sorted(time_to_first_token(engine, name, f"The capital of France is {i}") for i in range(5))[2]
    result = {}
    long = threading.Thread(target=lambda: result.setdefault("long", time_to_first_token(engine, name, long_prompt(21, 3990))))
    long.start()
    time.sleep(1.0)
    during = []
    while long.is_alive() and len(during) < 8:
        during.append(time_to_first_token(engine, name, f"The capital of Spain is {len(during)}"))
        time.sleep(0.2)
    long.join()
    assert len(during) >= 3, f"the 4000-token prefill ended too soon to test ({result})"
    # A short request waits for the step in flight (the 0.2 s step target) and then its own:
    # up to about two steps on this loaded 2-core machine. Without the step target it would wait
    # for the whole 4000-token prefill (seconds).
    limit = max(3 * solo, 0.5)
    assert max(during) <= limit, f"short TTFT during the long prefill {during} (solo {solo:.3f} s, limit {limit:.3f} s)"


def open_descriptors(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def test_slow_header_flood_is_closed_and_descriptors_return(engine, name):
    baseline = open_descriptors(engine.proc.pid)
    address = urlparse(engine.base)
    flood = []
    for _ in range(500):
        s = socket.create_connection((address.hostname, address.port), timeout=10)
        s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        flood.append(s)
    # An honest client is still served while the flood sits there.
    r = requests.post(engine.base + "/v1/completions", json={"model": name, "prompt": "Hi", "max_tokens": 2}, timeout=30)
    assert r.status_code == 200, r.text
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and open_descriptors(engine.proc.pid) > baseline + 5:
        time.sleep(0.25)
    assert open_descriptors(engine.proc.pid) <= baseline + 5, "the server kept the unfinished connections open"
    for s in flood:
        s.close()
