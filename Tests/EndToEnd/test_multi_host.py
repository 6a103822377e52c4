"""Tensor parallelism across hosts: the router and two workers on three "hosts" (network
namespaces made by the test, joined by veth pairs to a bridge: TCP is all they share), the
router attached to the workers' endpoints (`--worker-endpoints`), the ranks meeting over TCP
(`--peers`). Greedy output must equal one worker's. A killed remote worker fails the request in
flight within 5 s; the test plays the hosts' service manager (restart on exit, as the systemd
units do), and the group serves again once both ranks are back."""
import os
import pathlib
import signal
import subprocess
import sys
import threading
import time

import pytest

from conftest import BIN_DIR, REPO, serving, wait_healthy

sys.path.insert(0, str(REPO / "scripts"))
from netns_hosts import NamespaceHosts  # noqa: E402

from test_tensor_parallel import (PROMPTS, assert_close, assert_kill_fails_the_request_fast,  # noqa: E402
                                  completion, model_name, served_again)

WORKER_PORT, COLLECTIVE_PORT, HTTP_PORT = 7000, 7100, 8000


class Supervised:
    """One service on one host, restarted whenever it exits until stopped (systemd's
    Restart=always with RestartSec=0.5). Its output goes to .build/e2e-<label>.log."""

    def __init__(self, label: str, argv: list[str]):
        self.label, self.argv = label, argv
        self.log = open(REPO / ".build" / f"e2e-{label}.log", "w+")
        self.starts = 0
        self.stopping = False
        self.proc = None
        self._start()
        self.watcher = threading.Thread(target=self._watch, daemon=True)
        self.watcher.start()

    def _start(self):
        self.starts += 1
        self.log.write(f"--- start {self.starts}: {' '.join(self.argv)}\n")
        self.log.flush()
        self.proc = subprocess.Popen(self.argv, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)

    def _watch(self):
        while not self.stopping:
            if self.proc.poll() is not None and not self.stopping:
                time.sleep(0.5)
                if not self.stopping:
                    self._start()
            time.sleep(0.1)

    def output(self) -> str:
        self.log.flush()
        self.log.seek(0)
        return self.log.read()

    def stop(self) -> None:
        self.stopping = True
        self.watcher.join(timeout=5)
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


class Cluster:
    """Host 0: the router; hosts 1 and 2: `per_host` workers each (ranks 0 .. per_host - 1 on
    host 1). With several per host they also get --group: they meet in shared memory within
    their host and over TCP across."""

    def __init__(self, hosts: NamespaceHosts, model: pathlib.Path, *worker_args: str, per_host: int = 1,
                 port_offset: int = 0):
        self.hosts = hosts
        world = 2 * per_host
        worker_port, collective_port, http_port = (p + port_offset for p in (WORKER_PORT, COLLECTIVE_PORT, HTTP_PORT))

        def host(r):
            return 1 + r // per_host

        peers = ",".join(f"tcp://{hosts.address(host(r))}:{collective_port + r}" for r in range(world))
        group = ["--group", f"tsl-hier-{os.getpid()}"] if per_host > 1 else []
        self.workers = [
            Supervised(f"host{host(r)}-worker{r}-of-{world}", hosts.command(
                host(r), str(BIN_DIR / "worker"), "--rank", str(r), "--shard", f"{r}/{world}", "--model", str(model),
                "--listen", f"tcp://{hosts.address(host(r))}:{worker_port + r}", "--peers", peers, *group,
                "--threads", "1", "--cpus", str(r % os.cpu_count()), *worker_args))
            for r in range(world)]
        endpoints = ",".join(f"tcp://{hosts.address(host(r))}:{worker_port + r}" for r in range(world))
        self.router = Supervised(f"host0-router-of-{world}", hosts.command(
            0, str(BIN_DIR / "router"), "--model", str(model), "--host", hosts.address(0), "--port", str(http_port),
            "--worker-endpoints", endpoints))
        self.base = f"http://{hosts.address(0)}:{http_port}"

    def wait_healthy(self, timeout=120.0):
        wait_healthy(self.base, timeout, describe=self.logs)

    def logs(self) -> str:
        return "\n".join(f"== {s.label}\n{s.output()[-3000:]}" for s in [self.router, *self.workers])

    def stop(self):
        self.router.stop()
        for worker in self.workers:
            worker.stop()


@pytest.fixture(scope="module")
def hosts():
    with NamespaceHosts(f"tsl{os.getpid() % 100000}", 3) as made:
        yield made


@pytest.fixture(scope="module")
def cluster(hosts, model_path):
    made = Cluster(hosts, model_path, "--activations", "f32")
    try:
        made.wait_healthy()
        yield made
    finally:
        made.stop()


@pytest.fixture(scope="module")
def one_worker_answers(model_path):
    with serving("--model", str(model_path), "--workers", "1", "--activations", "f32") as router:
        name = model_name(router)
        return [completion(router, name, prompt) for prompt in PROMPTS]


def assert_equals_one_worker(cluster, one_worker_answers, group_line):
    """Greedy text equal to one worker's, logprobs within the parity bound, and every rank
    logged that it joined the group as `group_line` says."""
    name = model_name(cluster)
    for prompt, reference in zip(PROMPTS, one_worker_answers):
        ours = completion(cluster, name, prompt)
        assert ours["text"] == reference["text"], prompt
        assert_close(ours["logprobs"]["token_logprobs"], reference["logprobs"]["token_logprobs"], prompt)
    for worker in cluster.workers:
        assert group_line in worker.output(), worker.output()[-2000:]


def test_three_hosts_over_tcp_equal_one_worker(cluster, one_worker_answers):
    # The ranks met over TCP, not in shared memory.
    assert_equals_one_worker(cluster, one_worker_answers, "joining tensor-parallel group (TCP tcp://")


def test_two_hosts_with_two_workers_each_equal_one_worker(hosts, model_path, one_worker_answers):
    """Ranks 0-1 on host 1 and 2-3 on host 2: each pair meets in shared memory, ranks 0 and 2
    over TCP; greedy text equal to one worker's, logprobs within the parity bound."""
    made = Cluster(hosts, model_path, "--activations", "f32", per_host=2, port_offset=50)
    try:
        made.wait_healthy()
        assert_equals_one_worker(made, one_worker_answers, "joining tensor-parallel group (shared memory /tsl-hier-")
        for worker in made.workers:
            assert "within each host, TCP across" in worker.output(), worker.output()[-2000:]
    finally:
        made.stop()


def test_a_killed_remote_worker_fails_requests_fast_and_the_group_serves_again(cluster, one_worker_answers):
    name = model_name(cluster)
    starts = [w.starts for w in cluster.workers]
    assert_kill_fails_the_request_fast(cluster.base, name, lambda: cluster.workers[1].proc.send_signal(signal.SIGKILL))
    # Rank 0 leaves its broken group too; both come back under their supervisors and meet again.
    again = served_again(cluster.base, {"model": name, "prompt": PROMPTS[0], "max_tokens": 24, "temperature": 0,
                                        "logprobs": 1})
    assert [w.starts for w in cluster.workers] == [s + 1 for s in starts], cluster.logs()
    assert again["choices"][0]["text"] == one_worker_answers[0]["text"]
