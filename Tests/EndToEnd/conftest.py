"""End-to-end fixtures: start the real `router` (which spawns its real `worker`) on a free
loopback port and talk HTTP to it. Binaries come from TESSEL_BIN_DIR (scripts/test sets it to
the debug build); the model from TESSEL_MODEL_CACHE (scripts/fetch-model puts it there)."""
import contextlib
import os
import pathlib
import signal
import socket
import subprocess
import time

import pytest
import requests

REPO = pathlib.Path(__file__).resolve().parents[2]
BIN_DIR = pathlib.Path(os.environ.get("TESSEL_BIN_DIR", REPO / ".build" / "debug"))
MODEL_CACHE = pathlib.Path(os.environ.get("TESSEL_MODEL_CACHE", pathlib.Path.home() / ".cache" / "tessel" / "models"))
DEFAULT_MODEL = MODEL_CACHE / "SmolLM2-135M-Instruct.Q4_1.gguf"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_healthy(base: str, timeout: float, check=lambda: None, describe=lambda: "") -> None:
    """Polls `base`/health until it answers 200; `check` may raise (a process that exited)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        check()
        try:
            if requests.get(base + "/health", timeout=2).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.25)
    raise AssertionError(f"{base} not healthy after {timeout}s:\n{describe()}")


class RouterProcess:
    def __init__(self, *args: str, env: dict | None = None):
        router = BIN_DIR / "router"
        assert router.exists(), f"{router} is missing: build with `swift build` (scripts/test does it)"
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.log = open(REPO / ".build" / f"e2e-router-{self.port}.log", "w+")
        self.proc = subprocess.Popen(
            [str(router), "--host", "127.0.0.1", "--port", str(self.port), *args],
            stdout=self.log, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})},
            start_new_session=True)

    def wait_healthy(self, timeout: float = 120.0) -> None:
        def exited():
            if self.proc.poll() is not None:
                raise AssertionError(f"router exited with {self.proc.returncode}:\n{self.output()}")
        wait_healthy(self.base, timeout, check=exited, describe=self.output)

    def output(self) -> str:
        self.log.flush()
        self.log.seek(0)
        return self.log.read()

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.log.close()
        return self.proc.returncode


@contextlib.contextmanager
def serving(*args: str):
    """A healthy router for the duration of the block; it must exit cleanly on SIGTERM after."""
    router = RouterProcess(*args)
    try:
        router.wait_healthy()
        yield router
    finally:
        code = router.stop()
        assert code == 0, f"router did not exit cleanly on SIGTERM ({code}):\n{router.output()[-4000:]}"


@pytest.fixture(scope="session")
def model_path() -> pathlib.Path:
    assert DEFAULT_MODEL.exists(), f"{DEFAULT_MODEL} is missing: run scripts/fetch-model"
    return DEFAULT_MODEL


@pytest.fixture(scope="session")
def server(model_path):
    # Exact activations: these tests pin greedy text ("Paris"), which 8-bit activations change on
    # this 135M model exactly as they do in llama.cpp (both answer "L'Étoile, la Marseillaise…").
    # The default (q8) engine is exercised by test_worker_engine.py and the process tests.
    with serving("--model", str(model_path), "--workers", "1", "--activations", "f32") as router:
        yield router


@pytest.fixture(scope="session")
def model_name(server) -> str:
    models = requests.get(server.base + "/v1/models", timeout=10).json()
    return models["data"][0]["id"]


@pytest.fixture(scope="session")
def client(server):
    from openai import OpenAI
    return OpenAI(base_url=server.base + "/v1", api_key="unused", max_retries=0, timeout=120)
