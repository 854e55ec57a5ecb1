"""``modelyard demo``: train, register, serve and call two models, narrated.

With ``check=True`` it verifies every answer and returns 0/1 (CI uses it); otherwise it keeps
serving with the URLs and a curl line on screen until Ctrl+C.
"""

from __future__ import annotations

import json
import shlex
import socket
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from rich.console import Console
from rich.panel import Panel
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.syntax import Syntax
from rich.table import Table

from modelyard import __version__
from modelyard.demo import triage
from modelyard.demo.data import FEATURES, make_customers, train
from modelyard.domain.errors import ModelyardError
from modelyard.domain.registry import fingerprint
from modelyard.serving.server import BackgroundServer, free_port
from modelyard.settings import Settings
from modelyard.yard import Yard, write_secret


def _port_free(host: str, port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def _ensure_version(yard: Yard, name: str, model: Any, *, to_onnx: bool, sample: np.ndarray,
                    data_fp: str, metrics: dict[str, float], params: dict[str, Any],
                    description: str) -> tuple[int, bool]:
    """Register unless the champion already came from this exact data (demo re-runs)."""
    try:
        champion = yard.version(f"{name}@champion")
        if champion.lineage.data_fingerprint == data_fp:
            return champion.version, False
    except ModelyardError:
        pass
    version = yard.register(
        name, model, sample=sample, to_onnx=to_onnx, data_fingerprint=data_fp,
        metrics=metrics, params=params, code_revision=f"modelyard-{__version__}",
        tags={"demo": "true", "team": "growth"}, description=description)
    yard.set_alias(name, "champion", version.version)
    return version.version, True


def run(yard_path: Path | None, port: int, check: bool, console: Console) -> int:
    console.print(Panel.fit(
        "[bold]Modelyard demo[/bold]: train two models on generated customer data, register "
        "them with lineage and signatures, build a support-ticket triage graph (text "
        "embedder -> quick classifier -> expert with a deadline and a fallback), serve it all, "
        "and call it over HTTP.",
        border_style="cyan"))
    settings = Settings.load(yard_path)
    created_key = None
    with Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(),
                  TimeElapsedColumn(), console=console, transient=False) as progress:
        with_graph = triage.available()
        step = progress.add_task("opening the yard", total=6 if with_graph else 5)
        try:
            yard = Yard(settings=settings)
        except ModelyardError:
            yard, created_key = Yard.init(settings=settings)
        progress.update(step, advance=1, description="generating 4,000 customers")
        data = make_customers()
        data_fp = fingerprint(data.x)
        progress.update(step, advance=1, description="training churn + lifetime value models")
        trained = train(data)
        progress.update(step, advance=1, description="registering churn (ONNX)")
        churn_v, churn_new = _ensure_version(
            yard, "churn", trained["churn"], to_onnx=True, sample=data.x[:8], data_fp=data_fp,
            metrics=trained["churn_metrics"], params={"C": 1.0, "model": "logistic"},
            description="Churn probability from account features (scaler + logistic "
            "regression, converted to ONNX).")
        progress.update(step, advance=1, description="registering lifetime value (skops)")
        ltv_v, ltv_new = _ensure_version(
            yard, "ltv", trained["ltv"], to_onnx=False, sample=data.x[:8], data_fp=data_fp,
            metrics=trained["ltv_metrics"], params={"alpha": 1.0, "model": "ridge"},
            description="Customer lifetime value in dollars (scaler + ridge, skops format).")
        for name in ("churn", "ltv"):
            try:
                if yard.endpoint(name).auth != "key":  # made public by an older demo
                    yard.update_endpoint(name, auth="key")
            except ModelyardError:
                yard.create_endpoint(name, f"{name}@champion", auth="key",
                                     description=f"demo endpoint for {name}")
        key_file = _demo_key(yard, settings.home / "demo-predictor.key")
        if with_graph:
            progress.update(step, advance=1, description="embedding 1,200 tickets, training "
                            "the triage classifiers")
            graph = triage.build(yard)
            try:
                yard.endpoint("triage")
                yard.update_endpoint("triage", graph=graph)
            except ModelyardError as exc:
                if exc.status != 404:
                    raise
                yard.create_endpoint("triage", graph=graph, auth="key",
                                     description="support-ticket triage (a graph)")
        progress.update(step, advance=1, description="yard ready")

    console.print(f"yard: [bold]{settings.home}[/bold]")
    if created_key:
        console.print(f"admin key (shown once, also in {settings.admin_key_file}): "
                      f"[bold yellow]{created_key}[/bold yellow]", highlight=False)
    for name, v, new, metrics in (("churn", churn_v, churn_new, trained["churn_metrics"]),
                                  ("ltv", ltv_v, ltv_new, trained["ltv_metrics"])):
        shown = ", ".join(f"{k}={val:.3f}" for k, val in metrics.items())
        console.print(f"  {name}:{v} @champion ({'new' if new else 'already registered'}; "
                      f"{shown})")

    host = "127.0.0.1"
    if not _port_free(host, port):
        new_port = free_port(host)
        console.print(f"[yellow]port {port} is busy; using {new_port}[/yellow]")
        port = new_port
    started = time.perf_counter()
    server = BackgroundServer(yard, host, port).start()
    console.print(f"server ready on [bold]{server.url}[/bold] in "
                  f"{time.perf_counter() - started:.2f} s")
    try:
        key = key_file.read_text().strip()
        ok = _call(server.url, data.x, key, console)
        if with_graph:
            ok &= _call_triage(server.url, key, console)
        else:
            console.print("[yellow]the triage graph needs the text extra: pip install "
                          "'modelyard[torch,text]'[/yellow]")
        if check:
            console.print("[green]demo check passed[/green]" if ok else
                          "[red]demo check failed[/red]")
            return 0 if ok else 1
        _show_usage(server.url, data.x, key_file, console)
        try:
            while server.thread.is_alive():
                time.sleep(0.5)
        except KeyboardInterrupt:
            console.print("\nstopping")
        return 0
    finally:
        server.stop()
        yard.close()


def _demo_key(yard: Yard, path: Path) -> Path:
    """A predictor-only key for the demo's calls, made once and kept next to the yard
    (readable by its owner only), so the endpoints need no public access."""
    if path.is_file():
        prefix = path.read_text().strip().partition(".")[0]
        if any(k["prefix"] == prefix and k["revoked_at"] is None for k in yard.list_keys()):
            return path
    created = yard.create_key("demo-client", ["predictor"])
    write_secret(path, created["key"])
    return path


def _call(url: str, x: np.ndarray, key: str, console: Console) -> bool:
    ok = True
    customers = x[:2].astype(float).round(2).tolist()
    with httpx.Client(base_url=url, timeout=30) as anonymous:
        r = anonymous.post("/endpoints/churn/predict", json={"instances": customers})
        console.print(Panel(f"the endpoints need a key (auth=key):\n{r.status_code} {r.text}",
                            title="no credentials", expand=False))
        ok &= r.status_code == 401
    with httpx.Client(base_url=url, timeout=30,
                      headers={"Authorization": f"Bearer {key}"}) as http:
        body = {"instances": customers}
        r = http.post("/endpoints/churn/predict", json=body)
        console.print(Panel(Syntax(f"POST /endpoints/churn/predict\n{json.dumps(body)}\n\n"
                                   f"{r.status_code} {r.text}", "json", word_wrap=True),
                            title="churn: plain JSON", expand=False))
        try:
            proba = np.asarray(r.json()["outputs"]["probabilities"])
            ok &= r.status_code == 200 and proba.shape == (2, 2) and \
                bool(np.allclose(proba.sum(axis=1), 1, atol=1e-4))
        except (ValueError, KeyError):
            ok = False
        oip = {"inputs": [{"name": "input", "datatype": "FP32", "shape": [2, len(FEATURES)],
                           "data": [v for row in customers for v in row]}]}
        r = http.post("/v2/models/ltv/infer", json=oip)
        console.print(Panel(Syntax(f"POST /v2/models/ltv/infer\n{json.dumps(oip)}\n\n"
                                   f"{r.status_code} {r.text}", "json", word_wrap=True),
                            title="ltv: Open Inference Protocol v2", expand=False))
        try:
            values = np.asarray(r.json()["outputs"][0]["data"], dtype=float)
            ok &= r.status_code == 200 and values.shape == (2,) and bool(np.isfinite(values).all())
        except (ValueError, KeyError, IndexError):
            ok = False
        r = http.post("/endpoints/churn/predict", json={"inputs": [[1, 2, 3]]})
        console.print(Panel(f"a wrong shape is refused before the model sees it:\n"
                            f"{r.status_code} {r.text}", title="bad input", expand=False))
        ok &= r.status_code == 422 and r.json().get("field") == "inputs.input"
        ok &= http.get("/v2/health/ready").status_code == 200
    return ok


def _call_triage(url: str, key: str, console: Console) -> bool:
    """One traced request through the graph: what each ticket became, and what ran."""
    body = {"inputs": {"text": triage.EXAMPLES}}
    with httpx.Client(base_url=url, timeout=60,
                      headers={"Authorization": f"Bearer {key}"}) as http:
        r = http.post("/endpoints/triage/predict?trace=1", json=body)
    if r.status_code != 200:
        console.print(Panel(f"{r.status_code} {r.text}", title="triage graph", expand=False))
        return False
    answer = r.json()
    answers = triage.describe(answer["outputs"])
    tickets = Table(title="POST /endpoints/triage/predict?trace=1", title_justify="left")
    tickets.add_column("ticket")
    tickets.add_column("category")
    for text, label in zip(triage.EXAMPLES, answers, strict=True):
        tickets.add_row(text, label)
    trace = Table(title="trace: what ran", title_justify="left")
    for column in ("node", "kind", "rows", "start ms", "ms", "status", "detail"):
        trace.add_column(column)
    for s in answer["trace"]:
        detail = {k: v for k, v in s.items()
                  if k not in ("node", "kind", "rows", "start_ms", "ms", "status")}
        trace.add_row(s["node"], s["kind"], str(s["rows"]), f"{s['start_ms']:.1f}",
                      f"{s['ms']:.1f}", s["status"],
                      ", ".join(f"{k}={v}" for k, v in detail.items()))
    console.print(tickets)
    console.print(trace)
    nodes = {s["node"] for s in answer["trace"]}
    return len(answers) == len(triage.EXAMPLES) and {"embed", "quick"} <= nodes


def _show_usage(url: str, x: np.ndarray, key_file: Path, console: Console) -> None:
    body = json.dumps({"instances": x[:1].astype(float).round(2).tolist()})
    auth = f'"Authorization: Bearer $(cat {shlex.quote(str(key_file))})"'
    curl = (f"curl -s {url}/endpoints/churn/predict -H 'Content-Type: application/json' "
            f"-H {auth} -d {shlex.quote(body)}")
    console.print(Panel(
        f"data plane:    {url}/endpoints/<name>/predict\n"
        f"               {url}/v2/models/<name>/infer  (Open Inference Protocol v2)\n"
        f"control plane: {url}/api/v1  (OpenAPI: {url}/openapi.json)\n"
        f"predictor key: {key_file} (role predictor; the admin key is separate)\n"
        f"features:      {', '.join(FEATURES)}",
        title="serving", border_style="green", expand=False), highlight=False)
    console.print("try (one line):", style="bold")
    # Printed bare and unwrapped so that it copies and pastes as one working command.
    console.print(curl, soft_wrap=True, highlight=False, markup=False)
    console.print("Ctrl+C stops the server.")
