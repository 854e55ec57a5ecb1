"""``modelyard graphs``: validate and deploy inference graphs from YAML files."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from modelyard.cli.common import console, emit, handle_errors, operations, shown, table
from modelyard.domain.errors import ModelyardError
from modelyard.graphs import Graph

app = typer.Typer(help="Validate and deploy inference graphs (YAML).", no_args_is_help=True)

FILE = typer.Argument(..., exists=True, dir_okay=False, readable=True,
                      help="The graph, as YAML (see docs: inputs, nodes, outputs).")


def _document(path: Path) -> dict[str, Any]:
    return Graph.load(path).to_dict()


@app.command()
@handle_errors
def validate(file: Path = FILE) -> None:
    """Check a graph against the registry: every problem at once, with its node path.

    Example: modelyard graphs validate triage.yaml
    """
    result = operations().validate_graph(_document(file))

    def render(r: dict[str, Any]) -> None:
        if r["ok"]:
            signature = r["signature"]
            answers = ", ".join(f"{s['name']} {s['dtype']}{s['shape']}"
                              for s in signature["outputs"])
            console.print(f"[green]valid[/green]: {shown(file.name)} (project "
                          f"{shown(r['project'])}) answers {shown(answers)}")
            return
        console.print(table(f"{len(r['problems'])} problem(s) in {file.name}",
                            ["where", "problem"],
                            [[p["path"], p["message"]] for p in r["problems"]]))

    emit(result, render)
    if not result["ok"]:
        raise typer.Exit(1)


@app.command()
@handle_errors
def deploy(
    file: Path = FILE,
    endpoint: str | None = typer.Option(None, "--endpoint", "-e",
                                        help="Endpoint name (default: the graph's name)."),
    auth: str = typer.Option("key", help="For a new endpoint: key (default), jwt or public "
                             "(public needs an admin)."),
    timeout_ms: int | None = typer.Option(None, help="The whole graph's default deadline."),
) -> None:
    """Create the endpoint that serves a graph, or update it to this version of the graph.

    Nothing is deployed unless the whole graph is valid.

    Example: modelyard graphs deploy triage.yaml --endpoint triage
    """
    doc = _document(file)
    name = endpoint or doc.get("graph")
    if not name:
        raise typer.BadParameter("give --endpoint or a 'graph:' name in the file")
    ops = operations()
    try:
        ops.endpoint(name)
        exists = True
    except ModelyardError as exc:
        if exc.status != 404:
            raise
        exists = False
    if exists:
        result = ops.update_endpoint(name, graph=doc, timeout_ms=timeout_ms)
        verb = "updated"
    else:
        result = ops.create_endpoint(name, graph=doc, auth=auth, timeout_ms=timeout_ms)
        verb = "created"
    emit(result, lambda e: console.print(
        f"endpoint [bold]{shown(e['name'])}[/bold] {verb}: graph with "
        f"{len(e['graph']['nodes'])} nodes ({e['auth']}); POST /endpoints/{e['name']}/predict"
        "?trace=1 shows what runs"))

