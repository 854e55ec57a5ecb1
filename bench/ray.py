"""Modelyard on the local backend, Modelyard on the ray backend, and plain Ray Serve: the same
model, the same request, the same closed-loop wrk load, one server at a time, in one run.

Usage: .venv/bin/python bench/ray.py            (writes bench/results/<run id>/ray.json + .md)
Env: MODEL_NAMES ("tiny"; the anchors' models, made with their make_models.py if missing),
DUR (10 s per wrk run), WARMUP (3 s), CONNS ("1 32"), ONLY (comma list of systems).

Systems (every Ray one gets 2 logical CPUs' worth of machine: the same two cores):
  modelyard-local      modelyard serve                      (the model in the server process)
  modelyard-ray        modelyard serve --backend ray        (our front, the model on Ray Serve,
                                                             throughput-optimized flags, default)
  modelyard-ray-direct the same server; wrk on the replica's own port (the endpoint's status
                       lists it): Modelyard's data plane inside the replica, no handle hop
  modelyard-ray-pool   the same endpoint with load: lazy: the model in a replica of the
                       model pool (many models per replica, ADR 0027), through the server
  ray-serve[-batch]    the anchors' ray_app.py behind Ray's proxy, Ray's default mode
  ray-serve-opt[-batch]   the same with RAY_SERVE_THROUGHPUT_OPTIMIZED=1 but without direct
                          ingress: HTTP answered outside the replica, as with modelyard-ray
                          (the "same mode" comparison)
  ray-serve-direct[-batch] RAY_SERVE_THROUGHPUT_OPTIMIZED=1 with direct ingress: the replica
                           answers HTTP itself (Ray's fastest mode; no front at all)
-batch: @serve.batch(max_batch_size=32, batch_wait_timeout_s=0.002). Modelyard always runs
its adaptive batcher (max_batch_size 32, 2 ms).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
ANCHORS = Path(os.environ.get("ANCHORS", ROOT.parent / "shared/bench/anchors"))
MODELS = Path(os.environ.get("MODELS", "/tmp/anchors-models"))
PY = ROOT / ".venv/bin/python"
DUR = int(os.environ.get("DUR", "10"))
WARMUP = int(os.environ.get("WARMUP", "3"))
CONNS = [int(c) for c in os.environ.get("CONNS", "1 32").split()]
ONLY = [s for s in os.environ.get("ONLY", "").split(",") if s]
BODY = re.search(r"wrk\.body = '([^']*)'", (ANCHORS / "post.lua").read_text()).group(1)
RAY_ENV = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_USAGE_STATS_ENABLED": "0"}
OPT = {"RAY_SERVE_THROUGHPUT_OPTIMIZED": "1"}
DIRECT = "direct:"  # route prefix: measured on the replica's own port, not the server's
SUBJECTS = ("modelyard-ray", "modelyard-ray-direct", "modelyard-ray-pool")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def systems(yard: Path, model: Path) -> list[tuple[str, list[str], dict[str, str], str, str]]:
    """(name, argv, env, route, working directory); $PORT/$PORT2 filled in per run."""
    my = [str(ROOT / ".venv/bin/modelyard"), "--yard", str(yard), "serve", "--port", "$PORT",
          "--log-level", "warning"]
    pooled = [str(ROOT / ".venv/bin/modelyard"), "--yard", f"{yard}-lazy", "serve", "--port",
              "$PORT", "--log-level", "warning", "--backend", "ray"]
    ray_app = [str(PY), str(ANCHORS / "ray_app.py")]
    plain = {"MODEL": str(model), "PORT": "$PORT", **RAY_ENV}
    direct = {**OPT, "RAY_SERVE_DIRECT_INGRESS_MIN_HTTP_PORT": "$PORT",
              "RAY_SERVE_DIRECT_INGRESS_MAX_HTTP_PORT": "$PORT3", "PROXY_PORT": "$PORT2"}
    route = "/endpoints/bench/predict"
    out = [
        ("modelyard-local", my, {}, route, str(ROOT)),
        ("modelyard-ray", [*my, "--backend", "ray"], RAY_ENV, route, str(ROOT)),
        ("modelyard-ray-direct", [*my, "--backend", "ray"], RAY_ENV, DIRECT + route,
         str(ROOT)),
        ("modelyard-ray-pool", pooled, RAY_ENV, route, str(ROOT)),
    ]
    # Ray's direct ingress right after ours: the closest comparison runs closest in time (the
    # machine is shared).
    out += [(f"ray-serve-direct{suffix}", ray_app, {**plain, **direct, "BATCH": batch},
             "/predict", str(ANCHORS)) for batch, suffix in (("0", ""), ("1", "-batch"))]
    for batch in ("0", "1"):
        suffix = "-batch" if batch == "1" else ""
        out += [
            (f"ray-serve{suffix}", ray_app, {**plain, "BATCH": batch}, "/predict", str(ANCHORS)),
            (f"ray-serve-opt{suffix}", ray_app,
             {**plain, **OPT, "RAY_SERVE_ENABLE_DIRECT_INGRESS": "0", "BATCH": batch},
             "/predict", str(ANCHORS)),
        ]
    return [s for s in out if not ONLY or s[0] in ONLY]


def prepare_yard(model: Path, home: Path, load: str = "eager") -> None:
    """A yard with the joblib model registered as is (scikit-learn, trusted: the anchors
    trained it) behind endpoint ``bench``, one replica of 1 CPU, batching as by default."""
    code = f"""
import numpy as np
from modelyard import Yard
yard, _ = Yard.init({str(home)!r})
yard.register("bench", path={str(model)!r}, sample=np.random.default_rng(0).normal(size=(4, 20)),
              trusted=True)
yard.create_endpoint("bench", "bench", auth="public",
                     deployment={{"max_batch_size": 32, "num_cpus": 1, "load": {load!r}}})
yard.close()
"""
    subprocess.run([str(PY), "-c", code], check=True)


def session_pids(sid: int) -> list[int]:
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(stat[3]) == sid:
                pids.append(int(entry))
    return pids


def stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM the server (ours shut Ray down themselves), then kill what is left of its
    session, by PID."""
    with_timeout = time.monotonic() + 30
    proc.send_signal(signal.SIGTERM)
    while proc.poll() is None and time.monotonic() < with_timeout:
        time.sleep(0.2)
    for pid in session_pids(proc.pid):
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)
    if proc.poll() is None:
        proc.kill()
        proc.wait()


def ready(url: str, timeout_s: float = 240) -> float:
    started = time.monotonic()
    request = urllib.request.Request(url, data=BODY.encode(),
                                     headers={"Content-Type": "application/json"})
    while time.monotonic() - started < timeout_s:
        try:
            with urllib.request.urlopen(request, timeout=5) as answer:
                if answer.status == 200:
                    return time.monotonic() - started
        except OSError:
            pass
        time.sleep(0.25)
    raise TimeoutError(f"{url} did not answer in {timeout_s} s")


def direct_url(server: str, yard: Path, endpoint: str) -> str:
    """The replica's own URL, from the endpoint's status (the admin key the yard wrote)."""
    key = (yard / "admin.key").read_text().strip()
    request = urllib.request.Request(f"{server}/api/v1/endpoints/{endpoint}",
                                     headers={"Authorization": f"Bearer {key}"})
    with urllib.request.urlopen(request, timeout=10) as answer:
        urls = json.load(answer)["status"]["direct"]
    if not urls:
        raise RuntimeError(f"endpoint {endpoint} lists no direct URL")
    return str(urls[0])


def wrk(url: str, conns: int, seconds: int) -> dict[str, Any]:
    out = subprocess.run(
        ["wrk", "-t", str(min(conns, 2)), "-c", str(conns), "-d", f"{seconds}s", "--latency",
         "-s", str(ANCHORS / "post.lua"), url], capture_output=True, text=True, check=True).stdout
    unit = {"us": 1e-3, "ms": 1.0, "s": 1e3}

    def ms(text: str) -> float:
        value, suffix = re.fullmatch(r"([\d.]+)(us|ms|s)", text).groups()  # type: ignore[union-attr]
        return float(value) * unit[suffix]

    dist = dict(re.findall(r"^\s+(50|75|90|99)%\s+(\S+)$", out, re.M))
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    non2xx = int(re.search(r"NON2XX (\d+)", out).group(1))  # type: ignore[union-attr]
    return {"conns": conns, "rps": round(rps, 1), "p50_ms": round(ms(dist["50"]), 3),
            "p90_ms": round(ms(dist["90"]), 3), "p99_ms": round(ms(dist["99"]), 3),
            "non2xx": non2xx}


def measure(name: str, argv: list[str], env: dict[str, str], route: str, cwd: str,
            logs: Path, yard: Path) -> dict[str, Any]:
    ports = {"$PORT": str(free_port()), "$PORT2": str(free_port())}
    ports["$PORT3"] = str(int(ports["$PORT"]) + 1)

    def fill(text: str) -> str:
        for key in ("$PORT3", "$PORT2", "$PORT"):
            text = text.replace(key, ports[key])
        return text

    full_env = {**os.environ, **{k: fill(v) for k, v in env.items()}}
    log = open(logs / f"{name}.log", "wb")  # noqa: SIM115  (closed below)
    proc = subprocess.Popen([fill(a) for a in argv], env=full_env, cwd=cwd, stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True)
    direct = route.startswith(DIRECT)
    route = route.removeprefix(DIRECT)
    url = f"http://127.0.0.1:{ports['$PORT']}{route}"
    # The machine is shared: what else ran is part of the result.
    row: dict[str, Any] = {"system": name, "loadavg_1m_before": os.getloadavg()[0]}
    try:
        row["startup_s"] = round(ready(url), 2)
        if direct:
            url = direct_url(url.removesuffix(route), yard, "bench") + route
            ready(url, 30)
            row["url"] = url
        wrk(url, max(CONNS), WARMUP)
        row["runs"] = [wrk(url, conns, DUR) for conns in CONNS]
    except Exception as exc:  # reported, not hidden: the row says what failed
        row["error"] = repr(exc)
    finally:
        stop(proc)
        log.close()
    print(json.dumps(row), flush=True)
    return row


def ratio(rows: dict[str, dict[str, Any]], a: str, b: str, conns: int, key: str
          ) -> float | None:
    def value(name: str) -> float | None:
        run = next((r for r in rows.get(name, {}).get("runs", []) if r["conns"] == conns), None)
        return run[key] if run else None

    x, y = value(a), value(b)
    return round(x / y, 3) if x and y else None


def report(rows: dict[str, dict[str, Any]], model: str) -> tuple[str, dict[str, Any]]:
    lines = [f"### model {model}", "",
             "| system | conns | req/s | p50 ms | p90 ms | p99 ms | non-2xx | startup s | "
             "load (1 min) before |",
             "|---|---|---|---|---|---|---|---|---|"]
    for name, row in rows.items():
        if "error" in row:
            lines.append(f"| {name} | - | failed: {row['error']} | | | | | |")
            continue
        for run in row["runs"]:
            lines.append(f"| {name} | {run['conns']} | {run['rps']} | {run['p50_ms']} | "
                         f"{run['p90_ms']} | {run['p99_ms']} | {run['non2xx']} | "
                         f"{row['startup_s']} | {row['loadavg_1m_before']:.1f} |")
    ratios: dict[str, Any] = {}
    for subject in SUBJECTS:
        ratios[subject] = {}
        lines += ["", f"| {subject} over | conns | p50 ratio | p99 ratio | req/s ratio |",
                  "|---|---|---|---|---|"]
        for peer in ("ray-serve-direct", "ray-serve-direct-batch", "ray-serve-opt",
                     "ray-serve-opt-batch", "ray-serve", "ray-serve-batch", "modelyard-ray",
                     "modelyard-local"):
            if peer == subject:
                continue
            for conns in CONNS:
                entry = {k: ratio(rows, subject, peer, conns, k)
                         for k in ("p50_ms", "p99_ms", "rps")}
                ratios[subject][f"{peer}@{conns}"] = entry
                lines.append(f"| {peer} | {conns} | {entry['p50_ms']} | {entry['p99_ms']} | "
                             f"{entry['rps']} |")
    return "\n".join(lines), ratios


def main() -> None:
    if shutil.which("wrk") is None:
        sys.exit("wrk is not installed")
    run_id = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    results = ROOT / "bench/results" / run_id
    results.mkdir(parents=True, exist_ok=True)
    names = os.environ.get("MODEL_NAMES", "tiny").split()
    if not all((MODELS / f"{m}.joblib").exists() for m in names):
        subprocess.run([str(PY), str(ANCHORS / "make_models.py"), str(MODELS)], check=True)
    summary: dict[str, Any] = {"run": run_id, "dur_s": DUR, "conns": CONNS,
                               "nproc": os.cpu_count(), "models": {}}
    markdown = [f"# Ray backend benchmark {run_id}", "",
                f"wrk closed loop, {DUR} s per run after {WARMUP} s of warm-up, one server at "
                f"a time on 127.0.0.1, {os.cpu_count()} cores shared with wrk. Body: one "
                "20-feature row (the anchors' post.lua). Ratios: modelyard-ray (front) and "
                "modelyard-ray-direct (the replica's own port) divided by the peer (latency: "
                "lower is better, so a ratio of 1.15 is 15% slower; req/s: "
                "higher is better).", ""]
    with tempfile.TemporaryDirectory(prefix="bench-ray-") as temp:
        for model in names:
            yard = Path(temp) / model
            prepare_yard(MODELS / f"{model}.joblib", yard)
            prepare_yard(MODELS / f"{model}.joblib", Path(f"{yard}-lazy"), load="lazy")
            rows = {}
            for name, argv, env, route, cwd in systems(yard, MODELS / f"{model}.joblib"):
                rows[name] = measure(name, argv, env, route, cwd, results, yard)
            text, ratios = report(rows, model)
            markdown += [text, ""]
            summary["models"][model] = {"rows": rows, "ratios_over_peers": ratios}
    (results / "ray.json").write_text(json.dumps(summary, indent=1))
    (results / "ray.md").write_text("\n".join(markdown))
    print("\n".join(markdown))
    print(f"results: {results}")


if __name__ == "__main__":
    main()
