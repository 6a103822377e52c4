"""CURVE keys (`router keygen`, `--curve-keys`): the router link encrypted with ZeroMQ CURVE,
only the router's key let in, and the workers' TCP collectives sealed with a key derived from
the workers' secret."""
import os
import shutil
import signal
import stat
import subprocess

import pytest
import requests

from conftest import BIN_DIR, REPO, free_port, serving
from test_tensor_parallel import completion, model_name

PROMPT = "The capital of France is"


def keygen(directory):
    r = subprocess.run([str(BIN_DIR / "router"), "keygen", str(directory)], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    return directory


class Workers:
    """Two ranks attached over TCP on this host (`--peers`), with the given keys."""

    def __init__(self, model, keys, tmp_path):
        self.endpoints = [f"tcp://127.0.0.1:{free_port()}" for _ in range(2)]
        peers = ",".join(f"tcp://127.0.0.1:{free_port()}" for _ in range(2))
        self.logs = [open(tmp_path / f"worker{r}.log", "w+") for r in range(2)]
        self.procs = [
            subprocess.Popen([str(BIN_DIR / "worker"), "--rank", str(r), "--shard", f"{r}/2", "--model", str(model),
                              "--listen", self.endpoints[r], "--peers", peers, "--threads", "1", "--activations", "f32",
                              *(["--curve-keys", str(keys)] if keys else [])],
                             stdout=self.logs[r], stderr=subprocess.STDOUT, start_new_session=True)
            for r in range(2)]

    def output(self, rank):
        self.logs[rank].flush()
        self.logs[rank].seek(0)
        return self.logs[rank].read()

    def stop(self):
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


def test_keygen_writes_two_pairs_with_private_secrets_and_never_overwrites(tmp_path):
    keys = keygen(tmp_path / "keys")
    for name in ("router.key", "router.pub", "worker.key", "worker.pub"):
        text = (keys / name).read_text()
        assert len(text.strip()) == 40, name
        mode = stat.S_IMODE(os.stat(keys / name).st_mode)
        assert mode == (0o600 if name.endswith(".key") else 0o644), (name, oct(mode))
    assert (keys / "router.key").read_text() != (keys / "worker.key").read_text()
    again = subprocess.run([str(BIN_DIR / "router"), "keygen", str(keys)], capture_output=True, text=True, timeout=30)
    assert again.returncode != 0 and "exists already" in again.stderr


def test_encrypted_cluster_answers_as_a_plain_one(tmp_path, model_path):
    """Two TCP ranks and the router, all with the keys: the same greedy text and logprobs as one
    plain worker."""
    with serving("--model", str(model_path), "--workers", "1", "--activations", "f32") as router:
        plain = completion(router, model_name(router), PROMPT)
    keys = keygen(tmp_path / "keys")
    workers = Workers(model_path, keys, tmp_path)
    try:
        with serving("--model", str(model_path), "--worker-endpoints", ",".join(workers.endpoints),
                     "--curve-keys", str(keys)) as router:
            ours = completion(router, model_name(router), PROMPT)
        assert ours["text"] == plain["text"]
        for a, b in zip(ours["logprobs"]["token_logprobs"], plain["logprobs"]["token_logprobs"]):
            assert abs(a - b) < 1e-3
    finally:
        workers.stop()


def test_spawned_workers_get_the_keys(tmp_path, model_path):
    keys = keygen(tmp_path / "keys")
    with serving("--model", str(model_path), "--workers", "2", "--curve-keys", str(keys)) as router:
        r = requests.post(router.base + "/v1/completions",
                          json={"model": model_name(router), "prompt": PROMPT, "max_tokens": 4, "temperature": 0}, timeout=60)
        assert r.status_code == 200, r.text


@pytest.mark.parametrize("router_keys", ["none", "other"])
def test_a_router_without_the_router_key_is_not_let_in(tmp_path, model_path, router_keys):
    """Workers with the keys; a router with no keys, or with its own pair but the workers'
    public key (so only its key is wrong), never completes a handshake: start-up fails naming
    the workers, and with a key the workers log the refusal."""
    keys = keygen(tmp_path / "keys")
    flags = []
    if router_keys == "other":
        other = keygen(tmp_path / "other")
        shutil.copy(keys / "worker.pub", other / "worker.pub")
        flags = ["--curve-keys", str(other)]
    workers = Workers(model_path, keys, tmp_path)
    try:
        r = subprocess.run([str(BIN_DIR / "router"), "--model", str(model_path), "--port", str(free_port()),
                            "--worker-endpoints", ",".join(workers.endpoints), "--worker-startup-timeout", "5", *flags],
                           capture_output=True, text=True, timeout=180)
        assert r.returncode != 0
        last = [line for line in r.stderr.strip().splitlines() if line.strip()][-1]
        assert last.startswith("router: workers did not start"), r.stderr[-2000:]
        if router_keys == "other":
            assert "its key is not the router's" in workers.output(0), workers.output(0)[-2000:]
    finally:
        workers.stop()


def test_a_rank_without_the_keys_is_refused_by_its_peers(tmp_path, model_path):
    keys = keygen(tmp_path / "keys")
    endpoints = [f"tcp://127.0.0.1:{free_port()}" for _ in range(2)]
    peers = ",".join(f"tcp://127.0.0.1:{free_port()}" for _ in range(2))
    runs = [subprocess.Popen([str(BIN_DIR / "worker"), "--rank", str(r), "--shard", f"{r}/2", "--model", str(model_path),
                              "--listen", endpoints[r], "--peers", peers, "--threads", "1",
                              *(["--curve-keys", str(keys)] if r == 0 else [])],
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
            for r in range(2)]
    outputs = [proc.communicate(timeout=120)[0] for proc in runs]
    assert all(proc.returncode != 0 for proc in runs), outputs
    assert "differs from this rank in encrypting payloads" in outputs[0], outputs[0][-2000:]
