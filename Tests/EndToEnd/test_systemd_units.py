"""The deploy/ units as systemd runs them: `systemd-analyze verify` finds nothing to say, and the
units' own ExecStart lines (expanded from deploy/tessel.env.example as systemd expands them: %i,
${VAR} as one word, $VAR split on whitespace) run a two-rank group and its router under a fake
NOTIFY_SOCKET and WATCHDOG_USEC: each process says STATUS= and EXTEND_TIMEOUT_USEC= while it
starts, READY=1 once serving, feeds the watchdog at least every half interval (also while a
request runs), and on SIGTERM says STOPPING=1 and exits cleanly (the router leaves its attached
workers running; the ranks stopped together all exit 0)."""
import os
import pathlib
import random
import re
import shlex
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time

import requests

from conftest import BIN_DIR, REPO, free_port

DEPLOY = REPO / "deploy"
WATCHDOG_SECONDS = 1.0


def environment_file(path: pathlib.Path) -> dict:
    values = {}
    for line in path.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, _, value = line.partition("=")
            values[key.strip()] = value.strip()
    return values


def exec_start(unit: pathlib.Path, instance: str, env: dict) -> list[str]:
    text = unit.read_text().replace("\\\n", " ")
    line = next(l for l in text.splitlines() if l.startswith("ExecStart="))[len("ExecStart="):]
    words = []
    for word in shlex.split(line.replace("%i", instance)):
        whole = re.fullmatch(r"\$(\w+)", word)
        if whole:
            words += env.get(whole.group(1), "").split()
        else:
            words.append(re.sub(r"\$\{(\w+)\}", lambda m: env[m.group(1)], word))
    assert words[0].startswith("/usr/local/bin/"), words
    return [str(BIN_DIR / pathlib.Path(words[0]).name), *words[1:]]


class NotifySocket:
    """A datagram socket standing in for systemd's, recording every notification it gets."""

    def __init__(self, directory: str, name: str):
        self.path = os.path.join(directory, name)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        self.sock.settimeout(0.2)
        self.messages = []  # (monotonic time, {key: value})
        self.open = True
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self):
        while self.open:
            try:
                data = self.sock.recv(65536).decode()
            except (socket.timeout, OSError):
                continue
            fields = dict(line.split("=", 1) for line in data.split("\n") if "=" in line)
            self.messages.append((time.monotonic(), fields))

    def times(self, key, value=None):
        return [t for t, m in list(self.messages) if key in m and (value is None or m[key] == value)]

    def wait_for(self, key, value, timeout, process):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.times(key, value):
                return
            assert process.poll() is None, f"exited with {process.returncode} before {key}={value}"
            time.sleep(0.05)
        raise AssertionError(f"no {key}={value} within {timeout} s; got {self.messages}")

    def close(self):
        self.open = False
        self.thread.join(timeout=2)
        self.sock.close()


def test_units_verify_clean(tmp_path):
    analyze = shutil.which("systemd-analyze")
    assert analyze, "systemd-analyze is missing: apt-get install systemd (scripts/test installs it)"
    # The units as installed, but with ExecStart pointing at this build (verify checks it runs).
    for unit in ["tessel-worker@.service", "tessel-router.service", "tessel.target"]:
        text = (DEPLOY / unit).read_text().replace("/usr/local/bin/", f"{BIN_DIR}/")
        (tmp_path / unit).write_text(text)
    shutil.copy(tmp_path / "tessel-worker@.service", tmp_path / "tessel-worker@0.service")
    r = subprocess.run([analyze, "verify", "tessel-worker@0.service", "tessel-router.service", "tessel.target"],
                       cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and not r.stdout.strip() and not r.stderr.strip(), r.stdout + r.stderr


def test_exec_start_lines_notify_ready_feed_the_watchdog_and_drain(model_path):
    env = environment_file(DEPLOY / "tessel.env.example")
    base = str(random.randint(2000, 6000))
    env.update(TESSEL_MODEL=str(model_path), TESSEL_PORT=str(free_port()), TESSEL_WORLD_SIZE="2",
               TESSEL_THREADS_PER_WORKER="1", TESSEL_WORKER_PORT_BASE=base,
               TESSEL_WORKER_ENDPOINTS=f"tcp://127.0.0.1:{base}0,tcp://127.0.0.1:{base}1",
               TESSEL_WORKER_GROUP=f"--group tessel-units-{os.getpid()}")
    directory = tempfile.mkdtemp(prefix="tessel-notify-")
    sockets, processes, logs = {}, {}, {}
    try:
        commands = {f"worker{r}": exec_start(DEPLOY / "tessel-worker@.service", str(r), env) for r in range(2)}
        commands["router"] = exec_start(DEPLOY / "tessel-router.service", "", env)
        for name, argv in commands.items():
            sockets[name] = NotifySocket(directory, name)
            logs[name] = open(REPO / ".build" / f"e2e-unit-{name}.log", "w+")
            process_env = {**os.environ, "NOTIFY_SOCKET": sockets[name].path,
                           "WATCHDOG_USEC": str(int(WATCHDOG_SECONDS * 1e6))}
            processes[name] = subprocess.Popen(argv, env=process_env, stdout=logs[name], stderr=subprocess.STDOUT)

        for name in commands:
            sockets[name].wait_for("READY", "1", 120, processes[name])
        for name in ["worker0", "worker1"]:
            status = [m.get("STATUS", "") for _, m in sockets[name].messages]
            assert any("loading" in s for s in status), status
            assert sockets[name].times("EXTEND_TIMEOUT_USEC"), sockets[name].messages
            assert sockets[name].times("EXTEND_TIMEOUT_USEC")[0] < sockets[name].times("READY")[0]
            ready = [m for _, m in sockets[name].messages if m.get("READY") == "1"][0]
            assert "serving" in ready.get("STATUS", ""), ready
        assert "serving" in [m for _, m in sockets["router"].messages if m.get("READY") == "1"][0]["STATUS"]

        # Serving through the units' processes, with the watchdog fed all along.
        start = time.monotonic()
        base_url = f"http://127.0.0.1:{env['TESSEL_PORT']}"
        name = requests.get(base_url + "/v1/models", timeout=10).json()["data"][0]["id"]
        r = requests.post(base_url + "/v1/completions", timeout=120, json={
            "model": name, "prompt": "Once upon a time", "max_tokens": 64, "temperature": 0, "ignore_eos": True})
        assert r.status_code == 200, r.text
        time.sleep(max(0.0, 2.5 * WATCHDOG_SECONDS - (time.monotonic() - start)))
        for name in commands:
            pings = [t for t in sockets[name].times("WATCHDOG", "1") if t >= sockets[name].times("READY")[0]]
            assert len(pings) >= 3, f"{name}: {len(pings)} watchdog pings"
            gaps = [b - a for a, b in zip(pings, pings[1:])]
            assert max(gaps) < WATCHDOG_SECONDS, f"{name}: watchdog gaps {gaps}"

        # As `systemctl stop tessel.target` does: the router drains (its attached workers keep
        # running), then the group's ranks are stopped together.
        for group in [["router"], ["worker0", "worker1"]]:
            for name in group:
                processes[name].send_signal(signal.SIGTERM)
            for name in group:
                assert processes[name].wait(timeout=60) == 0, f"{name} exited with {processes[name].returncode}"
            time.sleep(0.3)
            for name in group:
                assert sockets[name].times("STOPPING", "1"), f"{name}: no STOPPING=1 in {sockets[name].messages[-5:]}"
    finally:
        for process in processes.values():
            if process.poll() is None:
                process.kill()
                process.wait()
        for notify in sockets.values():
            notify.close()
        for name, log in logs.items():
            log.close()
        shutil.rmtree(directory, ignore_errors=True)
