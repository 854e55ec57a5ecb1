"""``--address ray://host:port`` (Ray Client): the server joins a Ray head it did not start,
through the head's client server (token authentication on, as Ray 2.60 does by default),
deploys its endpoints there, answers through handles and through the replicas' own ports,
and leaves the cluster running (its applications deleted) when it stops. The head is a real
``ray start --head`` with its own ports and temporary folder, stopped by process id after
the module; the server is the CLI in its own process."""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

pytest.importorskip("ray", reason="Ray is not installed (pip install 'modelyard[ray]')")

from modelyard import Yard
from modelyard.serving.server import free_port
from modelyard.settings import Settings

RAY = str(Path(sys.executable).parent / "ray")
ROWS = np.random.default_rng(2).normal(size=(4, 4)).astype(np.float32)


def _pids(session: int, marker: str) -> list[int]:
    """Processes of the head's session, or whose command line names its temporary folder
    (Ray's daemons start sessions of their own)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes().decode(errors="replace")
        except OSError:
            continue
        ours = int(stat[3]) == session or (marker and marker in cmdline)
        if ours and int(entry) != os.getpid():
            found.append(int(entry))
    return found


@pytest.fixture(scope="module")
def ray_head() -> Iterator[tuple[str, dict[str, str], Path]]:
    """A Ray head with a client server and token authentication (a fresh token); yields its
    ``ray://`` address and the environment a client needs (the token, Serve's flags).
    (Ray 2.60's GCS listens on every interface whatever --node-ip-address says; the token
    keeps the test's cluster to the test.)"""
    temp = tempfile.mkdtemp(prefix="rayc-", dir="/tmp")
    client_port = free_port()
    ports = ["--port", str(free_port()), "--ray-client-server-port", str(client_port),
             "--node-manager-port", str(free_port()), "--object-manager-port",
             str(free_port()), "--dashboard-agent-listen-port", str(free_port()),
             "--dashboard-agent-grpc-port", str(free_port()), "--runtime-env-agent-port",
             str(free_port()), "--metrics-export-port", str(free_port())]
    # Serve's flags are read by the cluster's processes: the head passes them on to them.
    env = {**os.environ, "RAY_SERVE_THROUGHPUT_OPTIMIZED": "1",
           "RAY_SERVE_ENABLE_DIRECT_INGRESS": "0", "RAY_USAGE_STATS_ENABLED": "0",
           "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(16)}
    log = open(Path(temp) / "head.log", "wb")  # noqa: SIM115  (closed below)
    head = subprocess.Popen(_watched(
        [RAY, "start", "--head", "--block", "--node-ip-address", "127.0.0.1", "--num-cpus",
         "2", "--temp-dir", temp, "--include-dashboard", "false", "--disable-usage-stats",
         *ports]), env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while True:
            assert head.poll() is None, (Path(temp) / "head.log").read_text()[-3000:]
            with contextlib.suppress(OSError), socket.create_connection(
                    ("127.0.0.1", client_port), timeout=1):
                break
            assert time.monotonic() < deadline, "the Ray head did not start in 120 s"
            time.sleep(0.5)
        yield f"ray://127.0.0.1:{client_port}", env, Path(temp)
    finally:
        _stop(head, temp)
        log.close()
        shutil.rmtree(temp, ignore_errors=True)


# Runs a command and SIGTERMs it when this test process dies, teardown or not: a killed CI
# run must not leave a head running (every later ray.init() on the machine would join it).
# (PR_SET_PDEATHSIG would do, but this sandbox ignores it.) SIGTERM to the watcher is passed
# on; ``ray start --block`` stops what it started on SIGTERM.
_WATCH = """
import os, signal, subprocess, sys, time
parent = os.getppid()
child = subprocess.Popen(sys.argv[1:])
signal.signal(signal.SIGTERM, lambda *_: child.terminate())
while child.poll() is None:
    if os.getppid() != parent:
        child.terminate()
    time.sleep(0.5)
sys.exit(child.returncode)
"""


def _watched(argv: list[str]) -> list[str]:
    return [sys.executable, "-c", _WATCH, *argv]


def _stop(process: subprocess.Popen[bytes], marker: str = "") -> None:
    """SIGTERM (``ray start --block`` stops what it started; the server shuts down), then
    SIGKILL by process id what is left of its session (and of the head's folder)."""
    process.send_signal(signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(10)  # what is left after it is killed below
    for pid in _pids(process.pid, marker):
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)
    if process.poll() is None:
        process.kill()
        process.wait()


def _on_cluster(address: str, env: dict[str, str], code: str) -> Any:
    """Run ``code`` (which prints JSON) in a fresh Ray Client driver."""
    script = f"import json, ray\nray.init(address={address!r})\n{code}\nray.shutdown()\n"
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_a_server_on_ray_client_serves_and_leaves_the_cluster_up(
        ray_head: tuple[str, dict[str, str], Path], tmp_path: Path) -> None:
    address, env, head_dir = ray_head
    home = tmp_path / "yard"
    yard, admin = Yard.init(settings=Settings.load(home, env={}))
    x = np.random.default_rng(4).normal(size=(100, 4)).astype(np.float32)
    model = LogisticRegression().fit(x, (x[:, 1] > 0).astype(np.int64))
    yard.register("client", model, sample=x[:3])
    yard.create_endpoint("client", "client:1", auth="public", deployment={"num_cpus": 0.1})
    expected = yard.predict("client:1", ROWS)  # in this process, for comparison
    yard.close()
    port = free_port()
    # The CLI in its own process: a Ray Client driver is process-wide state.
    log = open(tmp_path / "server.log", "wb")  # noqa: SIM115  (closed below)

    def start() -> subprocess.Popen[bytes]:
        return subprocess.Popen(_watched(
            [str(Path(sys.executable).parent / "modelyard"), "--yard", str(home), "serve",
             "--backend", "ray", "--address", address, "--port", str(port), "--log-level",
             "warning"]), env=env, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True)

    server = start()
    url = f"http://127.0.0.1:{port}"
    body = {"inputs": ROWS.tolist()}
    retried = False
    try:
        deadline = time.monotonic() + 240
        while True:
            said = (tmp_path / "server.log").read_text()[-3000:]
            if server.poll() is not None and not retried and \
                    "Starting Ray client server failed" in said:
                # Ray's client proxy starts a process per client; once in a CI run it died
                # at start under load (Ray's own log of it is printed here). Not ours: the
                # server is started once more, and a second failure fails the test.
                print("Ray's client server failed to start:", *(
                    f"{err.name}: {err.read_text()[-2000:]}" for err in
                    head_dir.glob("session_*/logs/ray_client_server_*.err")), sep="\n")
                retried, server = True, start()
            assert server.poll() is None, said
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                    break
            assert time.monotonic() < deadline, (tmp_path / "server.log").read_text()[-3000:]
            time.sleep(0.5)
        answer = httpx.post(f"{url}/endpoints/client/predict", json=body, timeout=60)
        assert answer.status_code == 200, answer.text
        outputs = answer.json()["outputs"]
        assert outputs["label"] == expected["label"].tolist()
        np.testing.assert_allclose(outputs["probabilities"], expected["probabilities"],
                                   rtol=1e-6)
        # The replica on the cluster answers on its own port too.
        status = httpx.get(f"{url}/api/v1/endpoints/client",
                           headers={"Authorization": f"Bearer {admin}"}).json()["status"]
        [direct] = status["direct"]
        mirrored = httpx.post(f"{direct}/endpoints/client/predict", json=body, timeout=30)
        assert mirrored.content == answer.content
        apps = _on_cluster(address, env, "from ray import serve\n"
                           "print(json.dumps(sorted(serve.status().applications)))")
        assert any("-client-1-" in a for a in apps), apps
    finally:
        _stop(server)
        log.close()
    assert server.returncode is not None
    # The cluster is still up, without the server's application.
    apps = _on_cluster(address, env, "from ray import serve\n"
                       "print(json.dumps(sorted(serve.status().applications)))")
    assert not any(a.startswith("modelyard-") for a in apps), apps
