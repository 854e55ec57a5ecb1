"""``modelyard projects``: group models and endpoints under a policy (approvals, signatures,
required model-card fields); roles can be granted per project as ``ROLE@PROJECT``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer
from rich.panel import Panel

from modelyard.cli.common import console, emit, handle_errors, operations, shown, table
from modelyard.domain.errors import ValidationFailed
from modelyard.domain.projects import APPROVABLE, CARD_FIELDS

app = typer.Typer(help="Create projects and set their governance policy.",
                  no_args_is_help=True)

CARD_DEFAULT = "default"

DESCRIPTION = typer.Option(None, help="What the project is for.")
APPROVALS = typer.Option(None, "--approvals", min=0, max=10,
                         help="Approvals (by other people) a guarded change needs; 0: none.")
ACTIONS = typer.Option(None, "--approval-actions", metavar="A,B",
                       help=f"Changes that need approvals (comma list of "
                       f"{', '.join(APPROVABLE)}).")
EXPIRY = typer.Option(None, "--approval-expiry-h", metavar="H",
                      help="Hours a request waits for approvals before it expires.")
SIGNATURES = typer.Option(None, "--require-signatures/--no-require-signatures",
                          help="Only load versions signed by a trusted key "
                          "(needs at least one --trust-key).", show_default=False)
TRUST = typer.Option(None, "--trust-key", metavar="PUBLIC.pem",
                     help="An Ed25519 public key (PEM file) whose signatures the project "
                     "trusts (repeatable; see 'modelyard keys signing-keygen').")
CARD = typer.Option(None, "--card-required", metavar="F1,F2",
                    help=f"Model-card fields a production version needs (comma list of "
                    f"{', '.join(CARD_FIELDS)}); '' for none, '{CARD_DEFAULT}' for the "
                    "yard's setting.")


def _split(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def _read_public_keys(paths: list[Path] | None) -> list[str]:
    out = []
    for path in paths or []:
        try:
            out.append(path.read_text())
        except (OSError, UnicodeDecodeError) as exc:
            raise ValidationFailed(f"cannot read the public key {path}: {exc}",
                                   field="trust_key") from None
    return out


def _policy(approvals: int | None, approval_actions: str | None,
            approval_expiry_h: float | None, require_signatures: bool | None,
            trusted_keys: list[str] | None, card_required: str | None) -> dict[str, Any]:
    """The policy fields given on the command line (the others stay as they are)."""
    policy: dict[str, Any] = {}
    if approvals is not None:
        policy["approvals_required"] = approvals
    if approval_actions is not None:
        policy["approval_actions"] = _split(approval_actions)
    if approval_expiry_h is not None:
        policy["approval_expiry_h"] = approval_expiry_h
    if require_signatures is not None:
        policy["signatures_required"] = require_signatures
    if trusted_keys:
        policy["trusted_keys"] = trusted_keys
    if card_required is not None:
        policy["card_required"] = None if card_required.strip() == CARD_DEFAULT \
            else _split(card_required)
    return policy


def _key_ids(pems: list[str]) -> list[str]:
    from modelyard.governance import signing

    out = []
    for pem in pems:
        try:
            out.append(signing.key_id(pem.encode()))
        except ValidationFailed:
            out.append("(unreadable key)")
    return out


def _render(p: dict[str, Any]) -> None:
    policy = p["policy"]
    if policy["approvals_required"]:
        approvals = (f"{policy['approvals_required']} for "
                     f"{', '.join(policy['approval_actions']) or 'nothing'} (requests expire "
                     f"after {policy['approval_expiry_h']:g}h)")
    else:
        approvals = "not required"
    keys = _key_ids(policy["trusted_keys"])
    card = policy["card_required"]
    lines = [
        f"description: {shown(p['description'] or '-')}",
        f"created: {p['created_at'][:19]} by {shown(str(p['created_by']))}",
        f"approvals: {approvals}",
        f"signatures: {'required' if policy['signatures_required'] else 'not required'}",
        f"trusted keys: {', '.join(keys) or '-'}",
        "card fields for production: " + ("yard default" if card is None
                                          else ", ".join(card) or "none"),
    ]
    console.print(Panel("\n".join(lines), title=f"project {p['name']}", expand=False),
                  highlight=False)


@app.command()
@handle_errors
def create(
    name: str = typer.Argument(..., help="Project name (lower case, digits, . _ -)."),
    description: str | None = DESCRIPTION,
    approvals: int | None = APPROVALS,
    approval_actions: str | None = ACTIONS,
    approval_expiry_h: float | None = EXPIRY,
    require_signatures: bool | None = SIGNATURES,
    trust_key: list[Path] | None = TRUST,
    card_required: str | None = CARD,
) -> None:
    """Create a project (yard-wide admins only); grant roles in it as ROLE@PROJECT.

    Example: modelyard projects create fraud --approvals 1 --trust-key ./modelyard-signing.pub
    """
    policy = _policy(approvals, approval_actions, approval_expiry_h, require_signatures,
                     _read_public_keys(trust_key), card_required)
    project = operations().create_project(name, description or "", policy or None)
    emit(project, _render)


@app.command("list")
@handle_errors
def list_projects() -> None:
    """List the projects you may read, with the gist of their policy.

    Example: modelyard projects list
    """
    projects = operations().list_projects()
    emit(projects, lambda ps: console.print(table(
        "Projects", ["name", "approvals", "signatures", "trusted keys", "description"],
        [[p["name"], p["policy"]["approvals_required"] or "-",
          "required" if p["policy"]["signatures_required"] else "-",
          len(p["policy"]["trusted_keys"]) or "-", p["description"]] for p in ps],
        empty="no projects yet: create one with 'modelyard projects create NAME'")))


@app.command()
@handle_errors
def show(name: str = typer.Argument(...)) -> None:
    """Show a project and its policy (trusted keys by key id; --json for the PEMs).

    Example: modelyard projects show fraud
    """
    emit(operations().project(name), _render)


@app.command()
@handle_errors
def update(
    name: str = typer.Argument(...),
    description: str | None = DESCRIPTION,
    approvals: int | None = APPROVALS,
    approval_actions: str | None = ACTIONS,
    approval_expiry_h: float | None = EXPIRY,
    require_signatures: bool | None = SIGNATURES,
    trust_key: list[Path] | None = TRUST,
    untrust_key: list[str] | None = typer.Option(
        None, "--untrust-key", metavar="KEY_ID",
        help="Stop trusting a key, by its key id (repeatable)."),
    card_required: str | None = CARD,
) -> None:
    """Change a project: only the options given change; --trust-key adds to the trusted keys.

    Only yard-wide admins may (a project's own admin cannot switch its approvals off).

    Example: modelyard projects update fraud --approvals 2 --require-signatures
    """
    added = _read_public_keys(trust_key)
    ops = operations()
    trusted: list[str] | None = None
    if added or untrust_key:
        current = list(ops.project(name)["policy"]["trusted_keys"])
        unknown = sorted(set(untrust_key or []) - set(_key_ids(current)))
        if unknown:
            raise ValidationFailed(f"project {name!r} does not trust a key {unknown[0]!r}; "
                                   "see 'modelyard projects show'", field="untrust_key")
        kept = [pem for pem, kid in zip(current, _key_ids(current), strict=True)
                if kid not in (untrust_key or [])]
        trusted = kept + [pem for pem in added if pem not in kept]
    policy = _policy(approvals, approval_actions, approval_expiry_h, require_signatures,
                     None, card_required)
    if trusted is not None:
        policy["trusted_keys"] = trusted
    if description is None and not policy:
        raise typer.BadParameter("nothing to change: give --description or a policy option")
    project = ops.update_project(name, description=description, policy=policy or None)
    emit(project, _render)
