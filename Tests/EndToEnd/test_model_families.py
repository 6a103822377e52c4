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
