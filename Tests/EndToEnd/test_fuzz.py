"""The fuzzer's fixed-seed runs: request bodies through parsing, checks, the model's chat template
and its tokenizer; Jinja templates through parse and render. No crash, no hang, and the number of
executions printed. `scripts/fuzz` runs longer with fresh seeds."""
import subprocess

from conftest import BIN_DIR, REPO


def fuzz(*args: str) -> str:
    binary = BIN_DIR / "tessel-fuzz"
    assert binary.exists(), f"{binary} is missing: build with `swift build` (scripts/test does it)"
    r = subprocess.run([str(binary), *args], capture_output=True, text=True, timeout=600)
    progress = [line for line in r.stdout.splitlines() if line.startswith("progress")]
    assert r.returncode == 0, (f"tessel-fuzz {' '.join(args)} failed (last progress: {progress[-1:] or 'none'}):\n"
                               f"{r.stdout[-2000:]}\n{r.stderr[-4000:]}")
    summary = r.stdout.strip().splitlines()[-1]
    print(summary)
    return summary


def test_request_bodies_fuzz_without_crash_or_hang(model_path):
    summary = fuzz("requests", "--model", str(model_path), "--corpus", str(REPO / "Tests/Fuzz/corpus/requests"),
                   "--runs", "200000", "--seed", "1")
    assert "200000 executions" in summary and "no crash, no hang" in summary, summary


def test_jinja_templates_fuzz_without_crash_or_hang():
    summary = fuzz("jinja", "--corpus", str(REPO / "Tests/Fuzz/corpus/jinja"),
                   "--corpus", str(REPO / "Tests/JinjaTests/Fixtures/chat-templates"), "--runs", "60000", "--seed", "1")
    assert "60000 executions" in summary and "no crash, no hang" in summary, summary
