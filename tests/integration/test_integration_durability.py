"""Durability under kill -9: the real server runs as a subprocess over a SQLite yard while a
thread registers versions through the SDK; the server is SIGKILLed at random moments and
restarted. Every acknowledged registration must survive with its artifact byte for byte, and
every version present must have a complete, loadable artifact."""

from __future__ import annotations

import functools
import hashlib
import os
import random
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from modelyard import Client, Yard
from modelyard.serving.server import free_port

ROUNDS = 5
START_TIMEOUT_S = 30.0

Data = tuple[np.ndarray, np.ndarray, np.ndarray]


@functools.cache
def _has_serve_cli() -> bool:
    """Asked once (a Python start-up, ~2 s), not before every restart."""
    probe = subprocess.run([sys.executable, "-m", "modelyard", "serve", "--help"],
                           capture_output=True, text=True, timeout=60, env=_env())
    return probe.returncode == 0 and "--port" in probe.stdout


def _server_command(home: Path, port: int) -> list[str]:
    """``python -m modelyard --yard HOME serve`` if the CLI is there, else uvicorn directly."""
    if _has_serve_cli():
        return [sys.executable, "-m", "modelyard", "--yard", str(home), "serve",
                "--port", str(port), "--log-level", "warning"]
    return [sys.executable, "-c",
            "import uvicorn,sys; from modelyard import Yard; "
            "from modelyard.serving.app import create_app; "
            "uvicorn.run(create_app(Yard(sys.argv[1])), host='127.0.0.1', "
            "port=int(sys.argv[2]), log_level='warning')",
            str(home), str(port)]


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("MODELYARD_")}


class ServerProcess:
    def __init__(self, command: list[str], log: Path, port: int) -> None:
        self.url = f"http://127.0.0.1:{port}"
        self.log = log
        with open(log, "ab") as out:
            self.proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT,
                                         env=_env())

    def wait_live(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            assert self.proc.poll() is None, f"server exited: {self.log.read_text()[-3000:]}"
            try:
                if httpx.get(f"{self.url}/v2/health/live", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "the server did not start in time"
            time.sleep(0.05)

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=30)


@dataclass
class Ledger:
    """What the registering thread saw: acknowledged versions and unexpected refusals."""

    acknowledged: dict[int, str] = field(default_factory=dict)  # version -> sha256
    refusals: list[str] = field(default_factory=list)
    attempts: int = 0


def _register_until_dead(url: str, key: str, tabular: Data, ledger: Ledger,
                         stop: threading.Event, seed: int) -> None:
    x, label, _ = tabular
    rng = np.random.default_rng(seed)
    with Client(url, key, timeout=30) as client:
        while not stop.is_set():
            # A different model each time, so every version has an artifact of its own.
            model = LogisticRegression(C=float(rng.uniform(0.01, 10))).fit(x, label)
            ledger.attempts += 1
            try:
                version = client.register("churn", model, sample=x[:3])
            except httpx.HTTPError:
                return  # the server died under us
            except Exception as exc:  # an answer, but not a success: must not happen
                ledger.refusals.append(repr(exc))
                return
            ledger.acknowledged[version["version"]] = version["artifact"]["sha256"]


@pytest.mark.slow
def test_registrations_survive_kill_9(tmp_path: Path, tabular: Data) -> None:
    home = tmp_path / "yard"
    yard, key = Yard.init(home)
    yard.close()
    assert key is not None
    ledger = Ledger()
    rng = random.Random(1234)
    log = tmp_path / "server.log"
    started = time.monotonic()
    server: ServerProcess | None = None
    try:
        for round_ in range(ROUNDS):
            port = free_port()
            server = ServerProcess(_server_command(home, port), log, port)
            server.wait_live()
            stop = threading.Event()
            worker = threading.Thread(target=_register_until_dead,
                                      args=(server.url, key, tabular, ledger, stop, round_),
                                      daemon=True)
            worker.start()
            # A fresh server's first registration is slow (lazy imports); once one is
            # through, kill at a random moment of the steady loop (~10 registrations/s).
            before = len(ledger.acknowledged)
            deadline = time.monotonic() + 30
            while len(ledger.acknowledged) == before and worker.is_alive():
                assert time.monotonic() < deadline, "no registration went through"
                time.sleep(0.01)
            time.sleep(rng.uniform(0.0, 1.0))
            server.kill()  # SIGKILL, mid-registration most of the time
            stop.set()
            worker.join(timeout=30)
            assert not worker.is_alive()
            server = None
        assert ledger.refusals == []
        assert len(ledger.acknowledged) >= ROUNDS, ledger

        # Restart once more and check over HTTP.
        port = free_port()
        server = ServerProcess(_server_command(home, port), log, port)
        server.wait_live()
        with Client(server.url, key) as client:
            versions = {v["version"]: v for v in client.versions("churn")}
            for number, digest in ledger.acknowledged.items():
                assert number in versions, f"acknowledged churn:{number} is gone"
                assert versions[number]["artifact"]["sha256"] == digest
            # Numbers have no gaps: a killed registration consumed none.
            assert sorted(versions) == list(range(1, len(versions) + 1))
            for number, version in versions.items():
                digest = version["artifact"]["sha256"]
                dest = client.download(digest, tmp_path / f"v{number}.tar")
                data = dest.read_bytes()
                assert hashlib.sha256(data).hexdigest() == digest
                assert len(data) == version["artifact"]["size"]
                dest.unlink()
        server.kill()
        server = None
    finally:
        if server is not None:
            server.kill()

    # Nothing half there: the database is intact, every stored blob matches its name, and
    # every version loads and predicts.
    with sqlite3.connect(home / "yard.db") as db:
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    with Yard(home) as yard:
        for digest in yard.artifacts.digests():
            with yard.artifacts.open(digest) as fh:
                assert hashlib.sha256(fh.read()).hexdigest() == digest
        x = tabular[0][:4]
        for version in yard.versions("churn"):
            predictor = yard.registry.load_predictor(version)
            out = predictor.predict({"input": x})
            assert out["probabilities"].shape == (4, 2)
    assert time.monotonic() - started < 90
