"""The router's side commands: tokenize, detokenize, chat-template."""
import json
import os
import pathlib
import subprocess

import requests

from conftest import BIN_DIR, REPO

VOCAB = REPO / "Tests" / "TokenizersTests" / "Fixtures" / "vocab"


def router(*args, stdin=""):
    return subprocess.run([str(BIN_DIR / "router"), *args], input=stdin, capture_output=True, text=True, timeout=120)


def vocab_cases(name):
    inputs = (VOCAB / f"{name}.gguf.inp").read_text(encoding="utf-8").split("\n__ggml_vocab_test__\n")
    outputs = (VOCAB / f"{name}.gguf.out").read_text(encoding="utf-8").split("\n")
    return list(zip(inputs, outputs))[:12]


def test_tokenize_matches_reference_ids_and_round_trips():
    model = VOCAB / "ggml-vocab-llama-bpe.gguf"
    for text, expected in vocab_cases("ggml-vocab-llama-bpe"):
        r = router("tokenize", "--model", str(model), stdin=text)
        assert r.returncode == 0, r.stderr
        assert r.stdout.split() == expected.split(), repr(text)
        back = router("detokenize", "--model", str(model), stdin=r.stdout)
        assert back.returncode == 0, back.stderr
        assert back.stdout.removesuffix("\n") == text or back.stdout == text


def test_tokenize_special_parses_special_tokens(model_path):
    plain = router("tokenize", "--model", str(model_path), stdin="<|im_start|>user").stdout.split()
    special = router("tokenize", "--model", str(model_path), "--special", stdin="<|im_start|>user").stdout.split()
    assert special[0] == "1"  # <|im_start|> is one token when specials are parsed
    assert len(plain) > len(special)


def test_chat_template_renders_the_models_template(tmp_path, model_path):
    messages = tmp_path / "messages.json"
    messages.write_text(json.dumps([{"role": "user", "content": "Hi"}]))
    r = router("chat-template", "--model", str(model_path), "--messages", str(messages), "--add-generation-prompt")
    assert r.returncode == 0, r.stderr
    assert r.stdout == ("<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face"
                        "<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n")


def test_chat_template_error_names_the_line(tmp_path, model_path):
    template = tmp_path / "bad.jinja"
    template.write_text("line one\n{% for m in messages %}\n{{ m.content }\n{% endfor %}")
    messages = tmp_path / "messages.json"
    messages.write_text("[]")
    r = router("chat-template", "--model", str(model_path), "--template", str(template), "--messages", str(messages))
    assert r.returncode != 0
    assert "line 3" in r.stderr, r.stderr


def test_tokenize_finds_an_org_name_in_the_hugging_face_cache(tmp_path):
    snapshot = tmp_path / "hub" / "models--HuggingFaceTB--SmolLM2-135M-Instruct" / "snapshots" / "abc123"
    snapshot.mkdir(parents=True)
    source = REPO / "Tests" / "TokenizersTests" / "Fixtures" / "smollm2"
    for f in source.iterdir():
        (snapshot / f.name).write_bytes(f.read_bytes())
    (snapshot / "config.json").write_text('{"architectures": ["LlamaForCausalLM"]}')
    (snapshot / "model.safetensors").write_bytes((2).to_bytes(8, "little") + b"{}")  # no tensors needed here
    refs = snapshot.parent.parent / "refs"
    refs.mkdir()
    (refs / "main").write_text("abc123")
    r = subprocess.run([str(BIN_DIR / "router"), "tokenize", "--model", "HuggingFaceTB/SmolLM2-135M-Instruct"],
                       input="Hello world", capture_output=True, text=True, timeout=60,
                       env={**os.environ, "HF_HUB_CACHE": str(tmp_path / "hub")})
    assert r.returncode == 0, r.stderr
    direct = router("tokenize", "--model", str(source), stdin="Hello world")
    assert r.stdout.split() == direct.stdout.split() and r.stdout.split()


def test_bad_serving_flags_are_refused_at_start(model_path):
    for flags, named in ((["--log-level", "bogus"], "--log-level"), (["--max-request-bytes", "lots"], "--max-request-bytes"),
                         (["--keep-alive-timeout", "-1"], "--keep-alive-timeout"),
                         (["--request-read-timeout", "-1"], "--request-read-timeout"),
                         (["--step-time-target", "nan"], "--step-time-target"),
                         (["--scheduling-policy", "lifo"], "--scheduling-policy")):
        r = router("--model", str(model_path), "--port", "1", *flags)
        assert r.returncode != 0, f"{flags} was accepted"
        assert named in r.stderr, r.stderr


def test_help_shows_the_serve_options_under_vllms_names():
    """`router --help` is a newcomer's first look: serving is what `router` does, so its
    options are what the help shows, with the side commands after them."""
    r = router("--help")
    assert r.returncode == 0, r.stderr
    for flag in ("--model", "--max-model-len", "--api-key", "--kv-cache-memory", "--served-model-name", "--max-num-seqs",
                 "--max-num-batched-tokens", "--chat-template", "--tool-call-parser", "--disable-log-requests"):
        assert flag in r.stdout, f"{flag} missing from router --help"
    for command in ("tokenize", "chat-template", "bench-grammar"):
        assert f"router {command}" in r.stdout


def test_max_model_len_caps_the_context_and_load_progress_is_printed(model_path):
    from conftest import serving
    with serving("--model", str(model_path), "--max-model-len", "64", "--disable-log-requests") as server:
        models = requests.get(server.base + "/v1/models", timeout=10).json()
        name = models["data"][0]["id"]
        assert models["data"][0]["max_model_len"] == 64
        one = requests.get(server.base + f"/v1/models/{name}", timeout=10)
        assert one.status_code == 200 and one.json() == models["data"][0]
        missing = requests.get(server.base + "/v1/models/no-such-model", timeout=10)
        assert missing.status_code == 404
        assert missing.json()["error"]["code"] == "model_not_found" and "no-such-model" in missing.json()["error"]["message"]
        long = requests.post(server.base + "/v1/completions", json={"model": name, "prompt": "word " * 80, "max_tokens": 4},
                             timeout=30)
        assert long.status_code == 400 and long.json()["error"]["code"] == "context_length_exceeded"
        ok = requests.post(server.base + "/v1/completions", json={"model": name, "prompt": "Hi", "max_tokens": 4}, timeout=30)
        assert ok.status_code == 200
        output = server.output()
    assert "loading weights: 100%" in output
    assert "POST /v1/completions" not in output, "--disable-log-requests still wrote access-log lines"
    r = router("--model", str(model_path), "--port", "1", "--max-model-len", "100000", "--worker-startup-timeout", "60")
    assert r.returncode != 0 and "--max-model-len 100000" in r.stderr, r.stderr
