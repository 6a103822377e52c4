"""Tensor parallelism through the API: `router --workers N` spawns N ranks that split the model
(attention by KV group, MLP by columns, the vocabulary by rows) and meet in shared memory.
Exact activations (`--activations f32`) make every split equal to one worker up to rounding."""
import json
import os
import pathlib
import signal
import threading
import time

import pytest
import requests

import psutil_free as proc_tools
from conftest import REPO, RouterProcess, serving

FIXTURES = REPO / "Tests" / "WorkerTests" / "Fixtures"
PROMPTS = [
    "The capital of France is",
    "def fibonacci(n):\n    ",
]


def completion(router, name, prompt, max_tokens=24, **extra):
    body = {"model": name, "prompt": prompt, "max_tokens": max_tokens, "temperature": 0, "logprobs": 1, **extra}
    r = requests.post(router.base + "/v1/completions", json=body, timeout=120)
    assert r.status_code == 200, r.text
    return r.json()["choices"][0]


def model_name(router):
    return requests.get(router.base + "/v1/models", timeout=10).json()["data"][0]["id"]


def assert_close(ours, reference, what):
    assert len(ours) == len(reference), what
    for i, (a, b) in enumerate(zip(ours, reference)):
        assert abs(a - b) <= 1e-4 * max(1.0, abs(b)), f"{what}: token {i}: logprob {a} vs {b}"


def assert_kill_fails_the_request_fast(base, name, kill):
    """Starts a long request, calls `kill` 1.5 s into it: the request must fail with a 5xx naming
    a rank within 5 s, never hang."""
    body = {"model": name, "prompt": "Tell me a long story.", "max_tokens": 2000, "temperature": 0, "ignore_eos": True}
    result = {}
    thread = threading.Thread(target=lambda: result.setdefault(
        "r", requests.post(base + "/v1/completions", json=body, timeout=60)))
    thread.start()
    time.sleep(1.5)
    kill()
    killed = time.time()
    thread.join(timeout=45)
    assert not thread.is_alive(), "the request hung on a dead rank"
    assert time.time() - killed < 5, f"took {time.time() - killed:.1f} s to fail"
    r = result["r"]
    assert r.status_code >= 500, r.text
    assert "rank" in r.json()["error"]["message"], r.text


def served_again(base, body, timeout=90):
    """Retries `body` until the group answers it (it is restarting); returns the answer."""
    deadline = time.time() + timeout
    again = None
    while time.time() < deadline:
        try:
            again = requests.post(base + "/v1/completions", json=body, timeout=60)
            if again.status_code == 200:
                break
        except requests.RequestException:
            pass
        time.sleep(0.5)
    assert again is not None and again.status_code == 200, again.text if again is not None else "no answer"
    return again.json()


@pytest.fixture(scope="module")
def single_worker_answers(model_path):
    # One decode pass per step here; the groups below run the default 8 (multi-step scheduling).
    with serving("--model", str(model_path), "--workers", "1", "--activations", "f32",
                 "--num-scheduler-steps", "1") as router:
        name = model_name(router)
        return [completion(router, name, prompt) for prompt in PROMPTS]


@pytest.mark.parametrize("workers", [2, 4])
def test_default_model_over_n_workers_equals_one_worker(model_path, single_worker_answers, workers):
    with serving("--model", str(model_path), "--workers", str(workers), "--activations", "f32") as router:
        assert len(proc_tools.worker_ranks(router.proc.pid)) == workers
        name = model_name(router)
        for prompt, reference in zip(PROMPTS, single_worker_answers):
            ours = completion(router, name, prompt)
            assert ours["text"] == reference["text"], prompt
            assert_close(ours["logprobs"]["token_logprobs"], reference["logprobs"]["token_logprobs"], prompt)


def sampled_answers(router):
    """Seeded sampling with penalties and logprobs, a stop string, n = 2 and a stream: what
    multi-step scheduling must not change."""
    name = model_name(router)
    seeded = completion(router, name, "Once upon a time", max_tokens=40, temperature=0.9, top_p=0.95, seed=11,
                        frequency_penalty=0.6, presence_penalty=0.3, logprobs=2)
    stopped = completion(router, name, "Count: 1, 2, 3,", max_tokens=60, stop=[" 9"])
    body = {"model": name, "prompt": "The sea", "max_tokens": 30, "temperature": 0.7, "seed": 3, "n": 2}
    pair = requests.post(router.base + "/v1/completions", json=body, timeout=120).json()["choices"]
    streamed = requests.post(router.base + "/v1/completions", json={**body, "n": 1, "stream": True}, timeout=120)
    chunks = [line for line in streamed.text.splitlines() if line.startswith("data: {")]
    return {
        "seeded": (seeded["text"], seeded["logprobs"]["token_logprobs"], seeded["logprobs"]["top_logprobs"]),
        "stopped": (stopped["text"], stopped["finish_reason"]),
        "pair": [(c["text"], c["finish_reason"]) for c in pair],
        "stream_chunks": len(chunks),
        "streamed": "".join(json.loads(c[6:])["choices"][0]["text"] for c in chunks),
    }


def test_multi_step_scheduling_samples_what_one_pass_per_step_does(model_path):
    """8 decode passes a step over 2 ranks (the sampled tokens shared from rank 0) against one
    pass a step on one worker: same seeded samples, logprobs, stop, and a chunk per token."""
    answers = []
    for args in (["--workers", "1", "--num-scheduler-steps", "1"], ["--workers", "2", "--num-scheduler-steps", "8"]):
        with serving("--model", str(model_path), "--activations", "f32", *args) as router:
            answers.append(sampled_answers(router))
    one, multi = answers
    assert multi["seeded"][0] == one["seeded"][0]
    assert_close(multi["seeded"][1], one["seeded"][1], "seeded")
    assert [sorted(t) for t in multi["seeded"][2]] == [sorted(t) for t in one["seeded"][2]]
    assert multi["stopped"] == one["stopped"] and one["stopped"][1] == "stop", one["stopped"]
    assert not multi["stopped"][0].endswith(" 9")
    assert multi["pair"] == one["pair"]
    assert multi["streamed"] == one["streamed"]
    assert multi["stream_chunks"] == one["stream_chunks"] >= 25


def assert_matches_transformers(router, reference_path):
    """Every case of a `*.expected.json` (scripts/fixtures): prompt logprobs within 2e-3 of
    transformers' fp32 log-softmax (echo + logprobs) and the greedy continuation's text equal."""
    reference = json.loads(reference_path.read_text())
    name = model_name(router)
    for case in reference["cases"]:
        prompt = case["prompt"]
        ours = completion(router, name, prompt, max_tokens=len(case["greedy"]), echo=True, logprobs=0,
                          ignore_eos=True)
        logprobs = ours["logprobs"]["token_logprobs"]
        for i, expected in enumerate(case["prompt_logprobs"]):
            assert abs(logprobs[i + 1] - expected) < 2e-3, f"prompt token {i + 1}: {logprobs[i + 1]} vs {expected}"
        # Generated text leaves special tokens out (ids 0-2 here), as the API does by default.
        generated = [t for t in case["greedy"] if t > 2]
        greedy = requests.post(router.base + "/detokenize", json={"model": name, "tokens": generated},
                               timeout=10).json()["prompt"]
        echoed = requests.post(router.base + "/detokenize", json={"model": name, "tokens": prompt},
                               timeout=10).json()["prompt"]
        assert ours["text"] == echoed + greedy


@pytest.mark.parametrize("model,workers", [("tiny-gqa9x3", 1), ("tiny-gqa9x3", 2), ("tiny-gqa9x3", 4),
                                           ("tiny-mqa", 1), ("tiny-mqa", 2)])
def test_uneven_splits_match_transformers(model, workers):
    """9 query heads over 3 KV heads (2 ranks: 6 + 3 heads; 4 ranks: KV head 0 on two ranks) and
    one KV head replicated, against transformers' fp32 log-softmax and greedy tokens."""
    with serving("--model", str(FIXTURES / model), "--workers", str(workers), "--activations", "f32") as router:
        assert_matches_transformers(router, FIXTURES / f"{model}.expected.json")


def test_a_killed_rank_fails_requests_fast_and_the_group_serves_again(model_path):
    router = RouterProcess("--model", str(model_path), "--workers", "2")
    try:
        router.wait_healthy()
        ranks = proc_tools.worker_ranks(router.proc.pid)
        assert sorted(ranks) == [0, 1], ranks
        name = model_name(router)
        assert_kill_fails_the_request_fast(router.base, name, lambda: os.kill(ranks[1], signal.SIGKILL))
        # The whole group restarts: rank 0 leaves its broken group too.
        router.wait_healthy(timeout=90)
        served_again(router.base, {"model": name, "prompt": "Hi", "max_tokens": 4})
        now = proc_tools.worker_ranks(router.proc.pid)
        assert now[0] != ranks[0] and now[1] != ranks[1], f"both ranks should be new processes: {ranks} -> {now}"
    finally:
        assert router.stop() == 0, router.output()[-3000:]


def test_a_split_that_cuts_a_quantised_block_is_a_start_up_error():
    """tiny-llama-q's attention output is Q4_1 (blocks of 32 columns); its 4 heads of 16 over 4
    ranks would cut them, and the router says which tensor."""
    import subprocess
    from conftest import BIN_DIR, free_port
    r = subprocess.run([str(BIN_DIR / "router"), "--model", str(FIXTURES / "tiny-llama-q.gguf"), "--workers", "4",
                        "--port", str(free_port())], capture_output=True, text=True, timeout=120)
    assert r.returncode != 0
    assert "attn_output.weight" in r.stderr and "block boundaries" in r.stderr, r.stderr[-2000:]
