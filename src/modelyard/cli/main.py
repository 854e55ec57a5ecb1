"""``modelyard``: the root command, ``init``, ``serve`` and ``predict``."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import typer

from modelyard import __version__
from modelyard.cli import (
    approvals,
    audit,
    backup,
    db,
    demo,
    endpoints,
    graphs,
    jobs,
    keys,
    models,
    monitor,
    projects,
    readiness,
    retrain,
    rollouts,
)
from modelyard.cli.common import (
    STATE,
    console,
    emit,
    err_console,
    handle_errors,
    operations,
    shown,
)
from modelyard.domain.errors import InvalidJSON, ValidationFailed

app = typer.Typer(
    name="modelyard",
    help="Run multi-model AI systems in production: registry, serving, rollouts.\n\n"
    "Finds its yard from --yard, else MODELYARD_HOME, else ./.yard. With --url (or "
    "MODELYARD_URL) commands talk to a running server instead.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
app.add_typer(models.app, name="models")
app.add_typer(endpoints.app, name="endpoints")
app.add_typer(graphs.app, name="graphs")
app.add_typer(keys.app, name="keys")
app.add_typer(projects.app, name="projects")
app.add_typer(approvals.app, name="approvals")
app.add_typer(rollouts.app, name="rollout")
app.add_typer(audit.app, name="audit")
app.add_typer(db.app, name="db")
app.add_typer(jobs.app, name="jobs")
app.add_typer(monitor.app, name="monitor")
app.add_typer(retrain.app, name="retrain")
app.command("worker")(jobs.worker)
app.command("demo")(demo.demo)
app.command("readiness")(readiness.readiness)
app.command("loadtest")(readiness.loadtest)
app.command("backup")(backup.backup)
app.command("restore")(backup.restore)


def _version(value: bool) -> None:
    if value:
        console.print(f"modelyard {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    yard: Path | None = typer.Option(None, "--yard", envvar="MODELYARD_HOME",
                                     help="Yard folder (default ./.yard)."),
    url: str | None = typer.Option(None, "--url", envvar="MODELYARD_URL",
                                   help="Talk to this server instead of opening the yard."),
    key: str | None = typer.Option(None, "--key", envvar="MODELYARD_API_KEY",
                                   help="API key for --url (default: the yard's admin.key)."),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                 help="Show the version and exit."),
) -> None:
    STATE.yard_path, STATE.url, STATE.key, STATE.as_json = yard, url, key, as_json


@app.command()
@handle_errors
def init(path: Path | None = typer.Argument(None, help="Where to create the yard.")) -> None:
    """Create a yard: SQLite metadata (WAL), an artifact folder and an admin API key.

    The key is printed once and kept in PATH/admin.key (mode 0600) for the local CLI.
    Set MODELYARD_DATABASE_URL / MODELYARD_ARTIFACTS_URL to use PostgreSQL / S3 instead.

    Example: modelyard init ./my-yard
    """
    from modelyard.settings import Settings
    from modelyard.yard import Yard

    settings = Settings.load(path or STATE.yard_path)
    yard, key = Yard.init(settings=settings)
    yard.close()
    data = {"home": str(settings.home), "database": repr(yard.db),
            "artifacts": settings.artifacts_url, "admin_key": key,
            "admin_key_file": str(settings.admin_key_file) if key else None}

    def render(d: dict[str, Any]) -> None:
        console.print(f"yard ready at [bold]{shown(d['home'])}[/bold]")
        console.print(f"  metadata:  {shown(d['database'])}\n  artifacts: "
                      f"{shown(d['artifacts'])}")
        if d["admin_key"]:
            console.print("  admin key (shown once; also in "
                          f"{shown(d['admin_key_file'])}, mode 0600):")
            console.print(f"  [bold yellow]{d['admin_key']}[/bold yellow]", highlight=False)
        else:
            console.print("  (the yard already existed; its keys are unchanged)")

    emit(data, render)


@app.command()
@handle_errors
def serve(
    host: str = typer.Option("127.0.0.1", help="Interface to bind (127.0.0.1 by default)."),
    port: int = typer.Option(8000, min=0, max=65535, help="TCP port."),
    workers: int = typer.Option(1, min=1, max=64, help="Server processes sharing the port "
                                "(each loads every model)."),
    log_level: str = typer.Option("info", help="debug, info, warning or error."),
    ssl_certfile: Path | None = typer.Option(None, help="TLS certificate (PEM): serve HTTPS."),
    ssl_keyfile: Path | None = typer.Option(None, help="TLS private key (PEM)."),
    grpc_port: int | None = typer.Option(
        None, "--grpc-port", min=0, max=65535,
        help="Also serve OIP v2 over gRPC (KServe/Triton protocol) on this port, same host and "
        "TLS; 0: off (default: the grpc_port setting). Needs the grpc extra."),
    backend: str | None = typer.Option(
        None, "--backend", help="Where deployments run: local (this process) or ray (Ray "
        "Serve; needs the ray extra). Default: the backend setting."),
    address: str | None = typer.Option(
        None, "--address", help="With --backend ray: 'auto' joins the Ray instance on this "
        "machine, 'ray://host:port' a remote one; omitted: starts a local Ray instance."),
) -> None:
    """Start the server: data plane and control plane on one port.

    Example: modelyard serve --port 8000 --workers 2
    Example: modelyard serve --backend ray --address auto
    """
    import os

    import uvicorn

    from modelyard.serving.app import create_app
    from modelyard.serving.grpc_v2 import GrpcListen
    from modelyard.telemetry.logs import logging_config
    from modelyard.yard import Yard

    started = time.perf_counter()
    if backend not in (None, "local", "ray"):
        raise typer.BadParameter("--backend must be local or ray")
    # Before anything loads: uvicorn finds out after start-up, having announced 'ready'.
    _check_listen(host, port)
    if ssl_certfile is not None and ssl_keyfile is not None:
        _check_tls(ssl_certfile, ssl_keyfile)
    yard = Yard(STATE.yard_path)
    if backend is not None or address is not None:
        chosen = yard.settings.with_(
            backend=backend or yard.settings.backend,
            ray_address=yard.settings.ray_address if address is None else address)
        yard.close()
        yard = Yard(settings=chosen)
    if yard.settings.backend == "ray" and workers > 1:
        raise typer.BadParameter("with the ray backend one server process fronts every "
                                 "replica: use --workers 1 and scale with replicas")
    # Every logger in the process, uvicorn's too, in the log_format setting's shape, redacted.
    log_config = logging_config(yard.settings.log_format, log_level)
    if (ssl_certfile is None) != (ssl_keyfile is None):
        raise typer.BadParameter("give both --ssl-certfile and --ssl-keyfile")
    tls: dict[str, Any] = {"ssl_certfile": str(ssl_certfile),
                           "ssl_keyfile": str(ssl_keyfile)} if ssl_certfile else {}
    if host not in ("127.0.0.1", "localhost", "::1") and not tls:
        err_console.print(
            f"[bold red]WARNING[/bold red]: listening on {host} WITHOUT TLS: API keys and "
            "payloads cross the network in clear text. Pass --ssl-certfile/--ssl-keyfile or "
            "put a TLS proxy in front.", highlight=False)
    scheme = "https" if tls else "http"
    grpc_port = yard.settings.grpc_port if grpc_port is None else grpc_port
    if grpc_port and workers > 1:
        raise typer.BadParameter("gRPC is served by the one server process: use --workers 1 "
                                 "with --grpc-port (or the grpc_port setting)")
    if workers > 1:
        yard.close()
        os.environ["MODELYARD_HOME"] = str(yard.settings.home)
        console.print(f"Modelyard {__version__} serving {shown(yard.settings.home)} on "
                      f"{scheme}://{host}:{port} with {workers} worker processes")
        uvicorn.run("modelyard.serving.app:app_from_environment", factory=True, host=host,
                    port=port, workers=workers, log_level=log_level, access_log=False,
                    log_config=log_config, **tls)
        return

    def announce(_: float) -> None:
        also = f" and gRPC on {host}:{grpc_port}" if grpc_port else ""
        console.print(f"Modelyard {__version__} serving {shown(yard.settings.home)} on "
                      f"{scheme}://{host}:{port}{also} (ready in "
                      f"{time.perf_counter() - started:.2f} s after start); dashboard at "
                      f"{scheme}://{host}:{port}/ui/")

    grpc = GrpcListen(host, grpc_port, tls.get("ssl_certfile"), tls.get("ssl_keyfile"))
    app_ = create_app(yard, on_ready=announce, tls=bool(tls), grpc=grpc)
    uvicorn.run(app_, host=host, port=port, log_level=log_level, access_log=False,
                log_config=log_config, **tls)


def _check_listen(host: str, port: int) -> None:
    import socket

    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0]
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn does
            probe.bind(address)
    except OSError as exc:  # socket.gaierror included
        raise typer.BadParameter(f"cannot listen on {host}:{port}: "
                                 f"{exc.strerror or exc}") from None


def _check_tls(certfile: Path, keyfile: Path) -> None:
    import ssl

    try:
        ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(certfile, keyfile)
    except (OSError, ssl.SSLError) as exc:
        raise typer.BadParameter(f"cannot serve TLS with {certfile} and {keyfile}: "
                                 f"{exc.strerror or exc}") from None


app.command("up", help="Alias of 'serve'.\n\nExample: modelyard up --port 8000")(serve)


def _read_inputs(data: str | None, file: Path | None) -> Any:
    if data is not None and file is not None:
        raise ValidationFailed("give --data or --file, not both", field="data")
    text = data if data is not None else (file.read_text() if file else sys.stdin.read())
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise InvalidJSON(f"inputs are not valid JSON: {exc}", field="data") from exc
    if isinstance(value, dict) and "inputs" in value:
        value = value["inputs"]
    if isinstance(value, dict):
        return {k: np.asarray(v) for k, v in value.items()}
    return np.asarray(value)


@app.command()
@handle_errors
def predict(
    endpoint: str = typer.Argument(..., help="Endpoint (or model reference in-process)."),
    data: str | None = typer.Option(None, "--data", "-d", help='JSON: [[...]] or {"x": ...}'),
    file: Path | None = typer.Option(None, "--file", "-f", help="JSON file (default: stdin)."),
) -> None:
    """Predict with an endpoint (through the server with --url, else in-process).

    Example: modelyard predict churn -d '[[5, 70.5, 2, 1, 0, 12]]'
    """
    outputs = operations().predict(endpoint, _read_inputs(data, file))
    emit(outputs, lambda o: console.print_json(json.dumps(o)))


@app.command()
@handle_errors
def gc(
    yes: bool = typer.Option(False, "--yes", help="Delete them (default: only list)."),
    min_age_s: float = typer.Option(3600, help="Leave blobs younger than this (an upload "
                                    "whose registration may be on its way)."),
) -> None:
    """List (or delete, with --yes) stored artifacts that no version uses.

    Example: modelyard gc --yes
    """
    from modelyard.yard import Yard

    with Yard(STATE.yard_path) as yard:
        digests = yard.collect_garbage(min_age_s=min_age_s, delete=yes)
    emit({"deleted" if yes else "unreferenced": digests}, lambda _: console.print(
        f"{'deleted' if yes else 'unreferenced (use --yes to delete)'}: {len(digests)} "
        "artifact(s)" + "".join(f"\n  {d}" for d in digests)))


def main() -> None:
    app()
