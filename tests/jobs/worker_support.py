"""Real ``modelyard worker`` processes for the kill tests: started against a yard's store with
project code on their path, short leases, and always killed and reaped at the end."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

from modelyard import Yard

Start = Callable[[str], "subprocess.Popen[bytes]"]


@contextlib.contextmanager
def worker_processes(yard: Yard, logs: Path, code: Path) -> Iterator[Start]:
    """``start(name)`` runs one worker (lease 2 s, polling 0.1 s), its output in
    ``logs/name.log``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MODELYARD_")}
    env.update(PYTHONPATH=os.pathsep.join([str(code), env.get("PYTHONPATH", "")]),
               MODELYARD_DATABASE_URL=yard.settings.database_url,
               MODELYARD_ARTIFACTS_URL=yard.settings.artifacts_url)
    started: list[subprocess.Popen[bytes]] = []

    def start(name: str) -> subprocess.Popen[bytes]:
        with open(logs / f"{name}.log", "wb") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", "modelyard", "--yard", str(yard.settings.home),
                 "worker", "--lease-s", "2", "--poll-s", "0.1"],
                stdout=out, stderr=subprocess.STDOUT, env=env)
        started.append(proc)
        return proc

    try:
        yield start
    finally:
        for proc in started:
            if proc.poll() is None:
                proc.kill()
            proc.wait(timeout=30)
