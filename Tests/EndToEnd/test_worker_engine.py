"""The worker engine as a user meets it: weights used in their encoding (resident memory near the
file's size), the numeric choices (--activations, --kv-cache-dtype, --kv-cache-memory) honoured
or refused at start-up with a clear error."""
import subprocess

import psutil_free as proc_tools
import requests

from conftest import BIN_DIR, RouterProcess, free_port

MiB = 1 << 20


def rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for pid {pid}")


def complete(router, prompt, max_tokens=16):
    name = requests.get(router.base + "/v1/models", timeout=10).json()["data"][0]["id"]
    r = requests.post(router.base + "/v1/completions", timeout=120, json={
        "model": name, "prompt": prompt, "max_tokens": max_tokens, "temperature": 0})
    assert r.status_code == 200, r.text
    return r.json()["choices"][0]["text"]


def test_worker_memory_stays_near_the_weight_bytes(model_path):
    # 64 MiB of KV cache; the weights stay in the file's mapping (98 MB), never copied to f32.
    router = RouterProcess("--model", str(model_path), "--kv-cache-memory", "64MiB")
    try:
        router.wait_healthy()
        complete(router, "The history of the city of Paris " * 40, max_tokens=32)  # a ~300-token prompt
        complete(router, "Once upon a time", max_tokens=64)
        workers = proc_tools.children_named(router.proc.pid, "worker")
        assert workers, "router should have spawned a worker"
        rss = rss_bytes(workers[0])
        weights = model_path.stat().st_size
        bound = 1.15 * weights + 64 * MiB + 64 * MiB
        print(f"worker RSS {rss / MiB:.1f} MiB; weights {weights / MiB:.1f} MiB; bound {bound / MiB:.1f} MiB")
        assert rss <= bound, f"worker RSS {rss / MiB:.1f} MiB exceeds 1.15 x weights + KV + 64 MiB = {bound / MiB:.1f} MiB"
    finally:
        assert router.stop() == 0, router.output()[-3000:]


def test_exact_activations_and_f32_cache_give_the_same_greedy_answer(model_path):
    router = RouterProcess("--model", str(model_path), "--activations", "f32", "--kv-cache-dtype", "f32")
    try:
        router.wait_healthy()
        text = complete(router, "The capital of France is", max_tokens=8)
        assert "Paris" in text, text
    finally:
        assert router.stop() == 0, router.output()[-3000:]


def run_router(*args, timeout=120):
    return subprocess.run([str(BIN_DIR / "router"), *args], capture_output=True, text=True, timeout=timeout)


def test_bad_engine_options_are_refused_at_start_up(model_path):
    for flag, value, expected in [("--activations", "int4", "--activations"), ("--kv-cache-dtype", "f8", "--kv-cache-dtype"),
                                  ("--kv-cache-memory", "lots", "--kv-cache-memory"), ("--dtype", "f64", "--dtype")]:
        r = run_router("--model", str(model_path), "--port", str(free_port()), flag, value)
        assert r.returncode != 0, f"{flag} {value} was accepted"
        assert expected in r.stderr, r.stderr


def test_a_cache_too_small_for_one_block_is_a_one_line_error(model_path):
    r = run_router("--model", str(model_path), "--port", str(free_port()), "--kv-cache-memory", "1KiB")
    assert r.returncode != 0
    assert "KV cache" in r.stderr and "block" in r.stderr, r.stderr
