"""``modelyard keys``: API keys (secrets are shown once, stored only as a hash)."""

from __future__ import annotations

from typing import Any

import typer

from modelyard.cli.common import console, emit, handle_errors, operations, table

app = typer.Typer(help="Create, list, rotate and revoke API keys.", no_args_is_help=True)


def _show_secret(data: dict[str, Any]) -> None:
    console.print(f"key for [bold]{data['owner']}[/bold] ({', '.join(data['roles'])}), "
                  "shown once:")
    console.print(data["key"], markup=False, highlight=False, soft_wrap=True)


@app.command()
@handle_errors
def create(
    owner: str = typer.Option(..., help="Who or what uses the key."),
    role: list[str] = typer.Option(..., help="viewer, predictor, developer, approver, "
                                   "operator or admin (repeatable)."),
    rate_per_s: float | None = typer.Option(None, help="Data-plane calls per second."),
    daily_quota: int | None = typer.Option(None, help="Data-plane calls per UTC day."),
) -> None:
    """Create a key. Its secret is printed once; keep it somewhere safe.

    Example: modelyard keys create --owner app --role predictor --rate-per-s 50
    """
    emit(operations().create_key(owner, role, rate_per_s=rate_per_s, daily_quota=daily_quota),
         _show_secret)


@app.command("list")
@handle_errors
def list_keys() -> None:
    """List keys: prefix, owner, roles, last use (never the secrets).

    Example: modelyard keys list --json
    """
    keys = operations().list_keys()
    emit(keys, lambda ks: console.print(table(
        "API keys", ["prefix", "owner", "roles", "created", "last used", "revoked"],
        [[k["prefix"], k["owner"], ", ".join(k["roles"]), k["created_at"][:19],
          (k["last_used_at"] or "-")[:19], (k["revoked_at"] or "-")[:19]] for k in ks])))


@app.command()
@handle_errors
def rotate(prefix: str = typer.Argument(..., help="The key's prefix (my_...).")) -> None:
    """Replace a key by a new one with the same owner and roles; the old one stops at once.

    Example: modelyard keys rotate my_0123456789ab
    """
    emit(operations().rotate_key(prefix), _show_secret)


@app.command()
@handle_errors
def revoke(prefix: str = typer.Argument(...),
           yes: bool = typer.Option(False, "--yes", help="Do not ask.")) -> None:
    """Revoke a key (refused for the last active admin key).

    Example: modelyard keys revoke my_0123456789ab --yes
    """
    if not yes and not typer.confirm(f"revoke key {prefix}?"):
        raise typer.Exit(1)
    emit(operations().revoke_key(prefix), lambda k: console.print(f"revoked {k['prefix']}"))
