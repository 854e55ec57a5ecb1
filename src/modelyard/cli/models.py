"""``modelyard models``: register, list, show, alias, archive, delete, search."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import typer
from rich.markdown import Markdown
from rich.panel import Panel

from modelyard.cli.approvals import is_pending, print_pending
from modelyard.cli.common import (
    console,
    emit,
    handle_errors,
    operations,
    parse_pairs,
    shown,
    table,
    visible,
)
from modelyard.domain.errors import ModelyardError, ValidationFailed
from modelyard.domain.names import ModelRef

app = typer.Typer(help="Register and manage model versions.", no_args_is_help=True)


def _load_sample(path: Path | None) -> Any:
    if path is None:
        return None
    if path.suffix == ".npy":
        return np.load(path, allow_pickle=False)
    if path.suffix == ".npz":
        with np.load(path, allow_pickle=False) as data:
            return {k: data[k] for k in data.files}
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ValidationFailed(f"cannot read sample {path}: {exc}", field="sample") from exc
    if isinstance(value, dict):
        return {k: np.asarray(v) for k, v in value.items()}
    return np.asarray(value)


def _git_revision() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                             timeout=5, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def _data_fingerprint(path: Path | None) -> str | None:
    if path is None:
        return None
    from modelyard.store.archive import sha256_file

    if not path.is_file():
        raise ValidationFailed(f"{path} is not a file", field="data")
    return "sha256:" + sha256_file(path)


def _version_rows(versions: list[dict[str, Any]]) -> list[list[Any]]:
    return [[v["version"], v["flavor"], v["status"], ", ".join(v["aliases"]),
             v["artifact"]["sha256"][:12], v["created_at"][:19], v["created_by"]]
            for v in versions]


VERSION_COLUMNS = ["version", "flavor", "status", "aliases", "sha256", "created", "by"]


@app.command()
@handle_errors
def register(
    name: str = typer.Argument(..., help="Model name (versions are numbered per name)."),
    path: Path = typer.Argument(..., help="A model file or folder (.onnx, .skops, .pt, ...)."),
    flavor: str | None = typer.Option(None, help="onnx, sklearn, torch or python "
                                      "(detected from the files when omitted)."),
    sample: Path | None = typer.Option(None, help="Sample input (.npy, .npz or .json) used to "
                                       "infer and check the signature."),
    signature: Path | None = typer.Option(None, help="Signature JSON: {inputs: [...], "
                                          "outputs: [...]}, overriding inference."),
    trusted: bool = typer.Option(False, "--trusted", help="Accept pickles/code you made "
                                 "yourself (recorded in lineage)."),
    trusted_type: list[str] | None = typer.Option(None, help="A skops type you reviewed and "
                                                  "trust (repeatable)."),
    to_onnx: bool = typer.Option(False, "--to-onnx", help="Convert a scikit-learn model to "
                                 "ONNX (needs --sample)."),
    description: str = typer.Option("", help="What this version is."),
    tag: list[str] | None = typer.Option(None, help="key=value (repeatable)."),
    param: list[str] | None = typer.Option(None, help="Training parameter key=value."),
    metric: list[str] | None = typer.Option(None, help="Evaluation metric key=number."),
    data: Path | None = typer.Option(None, help="Training data file: fingerprinted "
                                     "(sha256), and for .npy, .npz, .json or a numeric .csv "
                                     "also the version's reference profile for drift."),
    code_revision: str | None = typer.Option(None, help="Code revision (default: git HEAD)."),
    parent: str | None = typer.Option(None, help="Version this derives from, e.g. churn:3."),
    project: str | None = typer.Option(None, help="Project of a new model (default: "
                                       "'default'); later versions stay in the model's."),
) -> None:
    """Register a new model version from a file or folder.

    Example: modelyard models register churn ./churn.onnx --project fraud --tag team=growth
    """
    metrics = parse_pairs(metric, "metric")
    try:
        metric_values = {k: float(v) for k, v in metrics.items()}
    except ValueError as exc:
        raise typer.BadParameter(f"metrics must be numbers: {exc}") from None
    sig = None
    if signature is not None:
        try:
            sig = json.loads(signature.read_text())
        except (OSError, ValueError) as exc:
            raise ValidationFailed(f"cannot read signature {signature}: {exc}",
                                   field="signature") from exc
    version = operations().register(
        name, path=path, flavor=flavor, sample=_load_sample(sample), signature=sig,
        trusted=trusted, trusted_types=trusted_type or [], to_onnx=to_onnx,
        description=description, tags=parse_pairs(tag, "tag"),
        params=parse_pairs(param, "param"), metrics=metric_values,
        data_fingerprint=_data_fingerprint(data),
        code_revision=code_revision or _git_revision(), parent=parent, project=project,
    )
    profiled = None
    if data is not None and data.suffix.lower() in PROFILED_SUFFIXES:
        # As the SDK's register(data=...): the reference profile drift is tested against.
        ref = f"{version['model']}:{version['version']}"
        try:
            profiled = operations().set_profile(ref, _load_table(data))
        except ModelyardError as exc:
            console.print(f"[yellow]{ref} is registered, but without a reference profile: "
                          f"{shown(exc.detail)} (attach one with 'modelyard models profile {ref} "
                          "--data FILE')[/yellow]")
    emit(version, lambda v: console.print(
        f"registered [bold]{v['model']}:{v['version']}[/bold] ({v['flavor']}, "
        f"sha256 {v['artifact']['sha256'][:12]}…)"
        + (f"; reference profile from {profiled['profile']['rows']} rows" if profiled
           else "")))


@app.command("import-mlflow")
@handle_errors
def import_mlflow(
    name: str = typer.Argument(..., help="Model name in Modelyard."),
    model_uri: str = typer.Argument(..., help="runs:/RUN_ID/PATH, models:/NAME/VERSION, "
                                    "models:/MODEL_ID or a local MLflow model folder."),
    tracking_uri: str | None = typer.Option(None, help="MLflow tracking URI (default: "
                                            "MLFLOW_TRACKING_URI, else MLflow's default)."),
    trusted: bool = typer.Option(False, "--trusted", help="Load MLflow's pickles (they run "
                                 "code): only for runs you trust (recorded in lineage)."),
    trusted_type: list[str] | None = typer.Option(None, help="A skops type you reviewed and "
                                                  "trust (repeatable)."),
    to_onnx: bool = typer.Option(False, "--to-onnx", help="Convert a scikit-learn model to "
                                 "ONNX (with MLflow's input example)."),
    project: str | None = typer.Option(None, help="Project of a new model (default: "
                                       "'default')."),
    description: str = typer.Option("", help="What this version is (default: where it "
                                    "came from)."),
) -> None:
    """Import a model MLflow logged, with its signature, input example and run lineage.

    Supported: the sklearn flavor (saved again as skops, or ONNX with --to-onnx) and pyfunc
    PythonModel models whose class is importable in the project (python flavor). Pickles are
    loaded only with --trusted; with --url the model is loaded here and uploaded.

    Example: modelyard models import-mlflow churn runs:/RUN_ID/model --trusted
    """
    from modelyard.interop.mlflow import import_mlflow as load_and_register

    version = load_and_register(
        operations(), name, model_uri, trusted=trusted, trusted_types=trusted_type or [],
        tracking_uri=tracking_uri, to_onnx=to_onnx, project=project, description=description)
    emit(version, lambda v: console.print(
        f"imported [bold]{v['model']}:{v['version']}[/bold] from {shown(model_uri)} "
        f"({v['flavor']}, {len(v['lineage']['params'])} params, "
        f"{len(v['lineage']['metrics'])} metrics)", highlight=False))


@app.command("list")
@handle_errors
def list_models(tag: list[str] | None = typer.Option(None, help="Filter by key=value.")
                ) -> None:
    """List models with their latest version and aliases.

    Example: modelyard models list --tag team=growth
    """
    models = operations().models(parse_pairs(tag, "tag"))
    emit(models, lambda ms: console.print(table(
        "Models", ["name", "latest", "aliases", "created"],
        [[m["name"], m["latest_version"],
          ", ".join(f"{a}->{v}" for a, v in sorted(m["aliases"].items())),
          m["created_at"][:19]] for m in ms],
        empty="no models yet: register one with 'modelyard models register NAME PATH'")))


@app.command()
@handle_errors
def show(ref: str = typer.Argument(..., help="name, name:VERSION or name@ALIAS")) -> None:
    """Show a model's versions, or one version in full.

    Example: modelyard models show churn@champion
    """
    parsed = ModelRef.parse(ref)
    ops = operations()
    if parsed.version is None and parsed.alias is None:
        versions = ops.versions(parsed.model)
        emit(versions, lambda vs: console.print(table(f"Model {parsed.model}", VERSION_COLUMNS,
                                                      _version_rows(vs))))
        return
    version = ops.version(ref)

    def render(v: dict[str, Any]) -> None:
        sig = "\n".join(f"  {kind[:-1]} {t['name']}: {t['dtype']}{t['shape']}"
                        for kind in ("inputs", "outputs") for t in v["signature"][kind])
        lin = v["lineage"]
        body = (f"flavor: {v['flavor']}   status: {v['status']}   aliases: "
                f"{', '.join(v['aliases']) or '-'}\n"
                f"sha256: {v['artifact']['sha256']} ({v['artifact']['size']} bytes)\n"
                f"created: {v['created_at']} by {v['created_by']}\n"
                f"description: {v['description'] or '-'}\nsignature:\n{sig}\n"
                f"lineage: data={lin['data_fingerprint'] or '-'} code={lin['code_revision'] or '-'}"
                f" parent={lin['parent'] or '-'} trusted={lin['trusted']}\n"
                f"  params={lin['params']}\n  metrics={lin['metrics']}\n  tags={lin['tags']}")
        console.print(Panel(shown(body), title=f"{v['model']}:{v['version']}", expand=False))

    emit(version, render)


@app.command()
@handle_errors
def alias(
    name: str = typer.Argument(..., help="Model name."),
    alias_name: str = typer.Argument(..., metavar="ALIAS", help="e.g. champion, production."),
    version: int | None = typer.Argument(None, help="Version to point at."),
    delete: bool = typer.Option(False, "--delete", help="Remove the alias instead."),
) -> None:
    """Point an alias at a version (atomically), or remove it.

    When the model's project holds changes of 'production' back for approval, the alias
    does not move yet: the command prints the pending request and how to approve it.

    Example: modelyard models alias churn champion 3
    """
    ops = operations()
    if delete:
        removed = ops.remove_alias(name, alias_name)
        if is_pending(removed):
            emit(removed, lambda a: print_pending(f"removing {name}@{alias_name}", a))
            return
        emit({"model": name, "alias": alias_name, "deleted": True},
             lambda _: console.print(f"removed alias {name}@{alias_name}"))
        return
    if version is None:
        raise typer.BadParameter("give the VERSION to point the alias at, or --delete")
    result = ops.set_alias(name, alias_name, version)
    if is_pending(result):
        emit(result, lambda a: print_pending(f"{name}@{alias_name} -> {version}", a))
        return
    emit(result, lambda r: console.print(f"{name}@{alias_name} -> {r['version']}"))


@app.command()
@handle_errors
def archive(name: str = typer.Argument(...), version: int = typer.Argument(...)) -> None:
    """Archive a version: kept for the record, no longer served or aliased.

    Example: modelyard models archive churn 1
    """
    result = operations().archive(name, version)
    emit(result, lambda v: console.print(f"archived {v['model']}:{v['version']}"))


@app.command()
@handle_errors
def delete(name: str = typer.Argument(...),
           yes: bool = typer.Option(False, "--yes", help="Do not ask.")) -> None:
    """Delete a model and all its versions (refused while an endpoint serves it).

    Example: modelyard models delete old-model --yes
    """
    if not yes and not typer.confirm(f"delete model {name!r} and all its versions?"):
        raise typer.Exit(1)
    operations().delete_model(name)
    emit({"model": name, "deleted": True}, lambda _: console.print(f"deleted model {name}"))


@app.command()
@handle_errors
def search(tag: list[str] = typer.Option(..., help="key=value (repeatable, all must match)")
           ) -> None:
    """Find versions by tag.

    Example: modelyard models search --tag team=growth
    """
    versions = operations().search(parse_pairs(tag, "tag"))
    emit(versions, lambda vs: console.print(table(
        "Versions", ["model", *VERSION_COLUMNS],
        [[v["model"], *row] for v, row in zip(vs, _version_rows(vs), strict=True)])))


@app.command()
@handle_errors
def card(
    ref: str = typer.Argument(..., help="name:VERSION or name@ALIAS"),
    set_: list[str] | None = typer.Option(None, "--set", help="field=value to change first "
                                          "(intended_use, out_of_scope_use, training_data, "
                                          "limitations, owners (comma list), risk_level)."),
) -> None:
    """Show a version's model card as Markdown, after changing fields with --set.

    Example: modelyard models card churn:3 --set owners=risk-team --set risk_level=high
    """
    ops = operations()
    changes = parse_pairs(set_, "--set")
    if changes:
        version = ops.version(ref)
        ops.update_card(version["model"], version["version"], **changes)
    result = ops.card(ref)
    emit(result, lambda r: console.print(Markdown(visible(r["markdown"]))))


def _version_number(ref: str) -> tuple[str, int]:
    """``name:3`` or ``name@alias`` (resolved now) as (name, version)."""
    parsed = ModelRef.parse(ref)
    if parsed.version is not None:
        return parsed.model, parsed.version
    if parsed.alias is None:
        raise typer.BadParameter(f"give a version: {parsed.model}:VERSION (or "
                                 f"{parsed.model}@ALIAS)")
    return parsed.model, int(operations().version(ref)["version"])


@app.command()
@handle_errors
def sign(
    ref: str = typer.Argument(..., help="name:VERSION (or name@ALIAS, resolved now)"),
    key: Path = typer.Option(..., "--key", "-k", metavar="PRIVATE.pem",
                             help="Ed25519 private key (from 'modelyard keys "
                             "signing-keygen'); it is used here and never sent."),
) -> None:
    """Sign a version's artifact and attach the signature.

    The project must already trust the matching public key (projects update --trust-key);
    a project with --require-signatures only serves versions signed this way.

    Example: modelyard models sign churn:3 --key ~/.modelyard/modelyard-signing.key
    """
    name, number = _version_number(ref)
    try:
        pem = key.read_bytes()
    except OSError as exc:
        raise ValidationFailed(f"cannot read the private key {key}: {exc.strerror or exc}",
                               field="key") from None
    stored = operations().sign(name, number, pem)
    emit(stored, lambda s: console.print(
        f"signed [bold]{name}:{number}[/bold] with key {s['key_id']}", highlight=False))


@app.command()
@handle_errors
def signatures(ref: str = typer.Argument(..., help="name:VERSION or name@ALIAS")) -> None:
    """List the signatures attached to a version (each verified when it was attached).

    Example: modelyard models signatures churn:3
    """
    name, number = _version_number(ref)
    found = operations().signatures(name, number)
    emit(found, lambda ss: console.print(table(
        f"Signatures of {name}:{number}", ["key id", "algorithm", "added by", "added"],
        [[s["key_id"], s["algorithm"], s["added_by"], s["added_at"][:19]] for s in ss],
        empty=f"{name}:{number} has no signatures: sign it with "
        f"'modelyard models sign {name}:{number} --key PRIVATE.pem'")))


PROFILED_SUFFIXES = (".npy", ".npz", ".json", ".csv")


def _load_table(path: Path) -> Any:
    """Training data for a profile: .npy/.npz/.json as for samples, or a CSV with a header
    (its numeric columns, in order, as one 2-D input)."""
    if path.suffix.lower() != ".csv":
        return _load_sample(path)
    import csv

    try:
        with path.open(newline="") as fh:
            rows = list(csv.reader(fh))
    except OSError as exc:
        raise ValidationFailed(f"cannot read {path}: {exc}", field="data") from exc
    if len(rows) < 2:
        raise ValidationFailed(f"{path} needs a header and at least one row", field="data")
    try:
        return np.asarray([[float(v) if v != "" else np.nan for v in row] for row in rows[1:]],
                          dtype=np.float64)
    except ValueError as exc:
        raise ValidationFailed(f"{path}: only numeric CSV columns can be profiled here ({exc})"
                               "; use .json for other columns", field="data") from None


@app.command()
@handle_errors
def profile(
    ref: str = typer.Argument(..., help="name:VERSION or name@ALIAS"),
    data: Path | None = typer.Option(None, help="Training inputs (.npy, .npz, .json or a "
                                     "numeric .csv) to compute the reference profile from."),
) -> None:
    """Show (or, with --data, compute and attach) a version's reference profile: what its
    training inputs and predictions looked like, which drift is tested against.

    Example: modelyard models profile churn:3 --data train.npy
    """
    ops = operations()
    result = ops.set_profile(ref, _load_table(data)) if data is not None else ops.profile(ref)

    def render(r: dict[str, Any]) -> None:
        features = r["profile"]["features"]
        rows = []
        for name, f in features.items():
            if f["kind"] == "numeric":
                summary = f"mean {f['mean']:.3g}, std {f['std']:.3g}, " \
                          f"[{f['min']:.3g}, {f['max']:.3g}]"
            elif f["kind"] == "categorical":
                summary = ", ".join(c for c, _ in f["categories"][:5])
            else:
                summary = f"width {f['width']}, {f['dims']} projected dims"
            missing = f["missing"] / max(1, f["count"] + f["missing"])
            rows.append([name, f["kind"], f"{missing:.1%}", summary])
        console.print(table(f"reference profile of {r['version']} "
                            f"({r['profile']['rows']} rows)",
                            ["feature", "kind", "missing", "summary"], rows))

    emit(result, render)
