"""Model families through the API: tiny random checkpoints of each family (float32 and bfloat16
files, scripts/fixtures/family_reference.py) and the real Gemma 3 270M GGUF, against
transformers' fp32 forward pass, with exact activations (`--activations f32`)."""
import json
import subprocess

import pytest
import requests

from conftest import REPO, serving
from test_tensor_parallel import FIXTURES, assert_matches_transformers, completion, model_name

FAMILIES = FIXTURES / "families"
GEMMA3 = REPO / "Tests" / "EndToEnd" / "fixtures" / "gemma3-270m.expected.json"


@pytest.mark.parametrize("model", [f"tiny-{family}{suffix}" for family in ("qwen2", "qwen3", "mistral", "gemma2", "gemma3", "phi3")
                                   for suffix in ("", "-bf16")])
def test_family_matches_transformers(model):
    with serving("--model", str(FAMILIES / model), "--activations", "f32") as router:
        assert_matches_transformers(router, FAMILIES / f"{model}.expected.json")


@pytest.mark.parametrize("family", ["qwen2", "qwen3", "gemma3", "phi3"])
def test_family_gguf_conversion_matches_transformers(family):
    """scripts/fixtures/family_gguf.py: the same weights as llama.cpp's converter writes them, with
    the tokenizer as a GGUF vocabulary."""
    with serving("--model", str(FAMILIES / f"tiny-{family}.gguf"), "--activations", "f32") as router:
        assert_matches_transformers(router, FAMILIES / f"tiny-{family}.expected.json")


@pytest.mark.parametrize("model", ["tiny-phi3-longrope", "tiny-phi3-longrope.gguf", "tiny-llama-dynamic"])
@pytest.mark.parametrize("limit", [None, 32])
def test_context_dependent_rotary_follows_max_model_len(model, limit):
    """LongRoPE (Phi-3) and dynamic NTK: served at the model's context, past the original 32
    positions (LongRoPE's long factors, dynamic NTK's raised base), or with --max-model-len 32,
    which the router passes to its workers (the short factors, the plain base)."""
    reference = model.replace(".gguf", "") + ("-short" if limit else "")
    flags = ["--max-model-len", str(limit)] if limit else []
    with serving("--model", str(FAMILIES / model), "--activations", "f32", *flags) as router:
        assert_matches_transformers(router, FAMILIES / f"{reference}.expected.json")


@pytest.mark.parametrize("model", ["tiny-qwen2", "tiny-gemma3", "tiny-phi3"])
def test_family_over_two_workers_matches_transformers(model):
    """Q/K/V biases, per-head Q/K norms and fused Q/K/V and gate/up tensors split with their heads and columns."""
    with serving("--model", str(FAMILIES / model), "--workers", "2", "--activations", "f32") as router:
        assert_matches_transformers(router, FAMILIES / f"{model}.expected.json")


@pytest.fixture(scope="module")
def gemma3_path():
    fetch = subprocess.run([str(REPO / "scripts" / "fetch-model"), "gemma3-270m"], capture_output=True, text=True)
    assert fetch.returncode == 0, f"scripts/fetch-model gemma3-270m failed: {fetch.stderr[-2000:]}"
    return fetch.stdout.strip()


def test_gemma3_270m_greedy_text_equals_transformers(gemma3_path):
    """The real Gemma 3 270M Q4_K_M file: the tokenizer gives transformers' token ids, greedy
    text is transformers' (which reads the same file dequantised to fp32), and prompt
    log-probabilities agree within 2e-3."""
    reference = json.loads(GEMMA3.read_text())
    with serving("--model", gemma3_path, "--activations", "f32") as router:
        name = model_name(router)
        for case in reference["cases"]:
            tokens = requests.post(router.base + "/tokenize", json={"model": name, "prompt": case["text"]}, timeout=10)
            assert tokens.json()["tokens"] == case["prompt"], case["text"]
            ours = completion(router, name, case["text"], max_tokens=len(case["greedy"]), echo=True, logprobs=0,
                              ignore_eos=True)
            echoed = ours["text"][:len(case["text"])]
            assert echoed == case["text"]
            assert ours["text"][len(case["text"]):] == case["greedy_text"], case["text"]
            logprobs = ours["logprobs"]["token_logprobs"]
            for i, expected in enumerate(case["prompt_logprobs"]):
                assert abs(logprobs[i + 1] - expected) < 2e-3, f"{case['text']!r} token {i + 1}: {logprobs[i + 1]} vs {expected}"


def assert_generates_with_a_small_cache(model, max_tokens):
    """`max_tokens` greedy tokens with a 64-token KV cache (--kv-cache-tokens 64: 4 blocks of 16
    slots per KV group), all of them, and the same ones as with a large cache."""
    body = {"prompt": [1, 40, 41, 42, 43, 44, 45, 46], "max_tokens": max_tokens, "temperature": 0, "ignore_eos": True}
    answers = []
    for cache in ("64", "4096"):
        with serving("--model", str(FAMILIES / model), "--activations", "f32", "--kv-cache-tokens", cache) as router:
            body["model"] = model_name(router)
            r = requests.post(router.base + "/v1/completions", json=body, timeout=120)
            assert r.status_code == 200, r.text
            answers.append(r.json())
    small, large = answers
    assert small["usage"]["completion_tokens"] == max_tokens and small["choices"][0]["finish_reason"] == "length"
    assert small["choices"][0]["text"] == large["choices"][0]["text"]


def test_local_layers_give_back_their_kv_so_global_layers_hold_more():
    """tiny-gemma3: two local layers (window 8) and one global layer, each its own KV group, so
    12 blocks in all; the local groups give back what their window passed, so the global layer's
    blocks hold 108 tokens of one sequence (64 if every layer held every position)."""
    assert_generates_with_a_small_cache("tiny-gemma3", 100)


def test_a_sliding_window_model_generates_past_the_whole_kv_cache():
    """tiny-mistral attends over 8 positions on every layer: the router gives back the KV blocks
    its window has passed, so with 4 blocks (64 tokens) it still generates 200 tokens."""
    assert_generates_with_a_small_cache("tiny-mistral", 200)
