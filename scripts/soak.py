"""The soak's client side (see scripts/soak)."""
import json
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time

import requests

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "Tests", "EndToEnd"))
from psutil_free import children_named  # noqa: E402 - the e2e tests' /proc lookup

bin_dir, model, total, concurrency = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
with socket.socket() as probe:
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
base = f"http://127.0.0.1:{port}"
log = open(f"/tmp/tessel-soak-{port}.log", "w")
# A KV cache small enough for the warm-up to touch all of it: its pages are resident once used, so
# RSS growth after the baseline is what the soak itself leaves behind.
router = subprocess.Popen([f"{bin_dir}/router", "--model", model, "--port", str(port), "--log-level", "warning",
                           "--kv-cache-memory", "256MiB"],
                          stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def rss_mib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def fds(pid):
    return len(os.listdir(f"/proc/{pid}/fd"))


def health():
    return requests.get(base + "/health", timeout=5).json()


WORDS = ["apple", "river", "stone", "cloud", "green", "house", "light", "table", "music", "paper"]


def hang_up(body, path):
    payload = json.dumps(body).encode()
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                  f"Content-Length: {len(payload)}\r\n\r\n".encode() + payload)
        time.sleep(random.uniform(0, 0.3))


def one(rng, name):
    """Sends one request; returns None when it went as expected, else a description."""
    kind = rng.random()
    chat = rng.random() < 0.5
    path = "/v1/chat/completions" if chat else "/v1/completions"
    body = {"model": name, "max_tokens": rng.randint(1, 16), "temperature": rng.choice([0, 0.7, 1.0])}
    prompt = " ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 30)))
    if kind < 0.02:
        prompt = " ".join(rng.choice(WORDS) for _ in range(rng.randint(800, 1500)))
    if chat:
        body["messages"] = [{"role": "user", "content": prompt}]
    else:
        body["prompt"] = prompt
    if 0.02 <= kind < 0.12:
        body["n"] = rng.randint(2, 4)
    elif 0.12 <= kind < 0.22:
        body.update(ignore_eos=True, max_tokens=32)
    elif 0.22 <= kind < 0.25:
        bad = rng.choice([b"{not json", json.dumps({**body, "temperature": -1}).encode(),
                          json.dumps({**body, "max_tokens": 10**6}).encode()])
        r = requests.post(base + path, data=bad, headers={"Content-Type": "application/json"}, timeout=120)
        return None if r.status_code == 400 else f"bad body answered {r.status_code}: {r.text[:200]}"
    elif 0.25 <= kind < 0.35:
        body["stream"] = rng.random() < 0.5
        hang_up(body, path)
        return None
    stream = rng.random() < 0.4
    body["stream"] = stream
    r = requests.post(base + path, json=body, stream=stream, timeout=300)
    if r.status_code != 200:
        return f"{path} answered {r.status_code}: {r.text[:200]}"
    if stream:
        text = r.text
        if "data: [DONE]" not in text:
            return f"{path} stream ended without [DONE]: {text[-200:]}"
    else:
        choices = r.json().get("choices", [])
        if len(choices) != body.get("n", 1):
            return f"{path} gave {len(choices)} choices for n={body.get('n', 1)}"
    return None


def main():
    deadline = time.time() + 300
    while time.time() < deadline:
        if router.poll() is not None:
            sys.exit(f"router exited: see {log.name}")
        try:
            if requests.get(base + "/health", timeout=2).status_code == 200:
                break
        except requests.RequestException:
            pass
        time.sleep(0.25)
    name = requests.get(base + "/v1/models", timeout=10).json()["data"][0]["id"]
    processes = [router.pid] + children_named(router.pid, "worker")
    # Warm up (allocator pools, prefix cache, every page of the KV cache) before the baseline:
    # long prompts from 16 clients at once fill the cache, then a round of the usual mix.
    def long_request(i):
        words = " ".join(random.Random(i).choice(WORDS) for _ in range(1500))
        requests.post(base + "/v1/completions", json={"model": name, "prompt": words, "max_tokens": 1}, timeout=600)
    fill = [threading.Thread(target=long_request, args=(i,)) for i in range(16)]
    for t in fill:
        t.start()
    for t in fill:
        t.join()
    for i in range(50):
        one(random.Random(i), name)
    time.sleep(1)
    before = {pid: rss_mib(pid) for pid in processes}
    fds_before = fds(router.pid)
    errors = []
    done = [0]
    lock = threading.Lock()
    counter = iter(range(total))

    def worker(index):
        rng = random.Random(1000 + index)
        while True:
            with lock:
                n = next(counter, None)
            if n is None:
                return
            try:
                problem = one(rng, name)
            except Exception as error:  # noqa: BLE001 - every failure is reported
                problem = f"exception: {error!r}"
            with lock:
                done[0] += 1
                if problem:
                    errors.append(problem)
                if done[0] % 1000 == 0:
                    print(f"{done[0]} requests, {len(errors)} unexpected errors", flush=True)

    started = time.time()
    threads = [threading.Thread(target=worker, args=(i,)) for i in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.time() - started
    # Hung-up requests are let go at the next step: wait for the scheduler to drain.
    for _ in range(100):
        state = health()
        if state["sequences_running"] == 0 and state["sequences_waiting"] == 0 and state["kv_blocks_used"] == 0:
            break
        time.sleep(0.1)
    time.sleep(1)
    state = health()
    after = {pid: rss_mib(pid) for pid in processes}
    fds_after = fds(router.pid)
    print(f"soak: {done[0]} requests in {elapsed:.0f} s with {concurrency} clients; {len(errors)} unexpected errors")
    for problem in errors[:20]:
        print("  " + problem)
    for pid in processes:
        label = "router" if pid == router.pid else f"worker {pid}"
        growth = (after[pid] - before[pid]) / before[pid] * 100
        print(f"  {label}: RSS {before[pid]:.1f} -> {after[pid]:.1f} MiB ({growth:+.1f}%)")
    print(f"  router descriptors: {fds_before} -> {fds_after}")
    print(f"  KV blocks in use at the end: {state['kv_blocks_used']} (sequences running {state['sequences_running']}, waiting {state['sequences_waiting']})")
    router.send_signal(signal.SIGTERM)
    router.wait(timeout=60)
    grown = any((after[p] - before[p]) / before[p] >= 0.05 for p in processes)
    sys.exit(1 if errors or state["kv_blocks_used"] or grown else 0)


main()
