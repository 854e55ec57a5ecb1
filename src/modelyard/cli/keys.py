"""``modelyard keys``: API keys (secrets are shown once, stored only as a hash)."""

from __future__ import annotations

import contextlib
import errno
import os
import tempfile
from pathlib import Path
from typing import Any

import typer

from modelyard.cli.common import console, emit, handle_errors, operations, shown, table
from modelyard.domain.errors import AlreadyExists, ValidationFailed

app = typer.Typer(help="Create, list, rotate and revoke API keys; make signing keys.",
                  no_args_is_help=True)

SIGNING_KEY = "modelyard-signing.key"
SIGNING_PUB = "modelyard-signing.pub"


def _show_secret(data: dict[str, Any]) -> None:
    console.print(f"key for [bold]{shown(data['owner'])}[/bold] ({', '.join(data['roles'])}), "
                  "shown once:")
    console.print(data["key"], markup=False, highlight=False, soft_wrap=True)


@app.command()
@handle_errors
def create(
    owner: str = typer.Option(..., help="Who or what uses the key."),
    role: list[str] = typer.Option(..., help="viewer, predictor, developer, approver, "
                                   "operator or admin, in every project, or scoped to one "
                                   "project as ROLE@PROJECT, e.g. approver@fraud "
                                   "(repeatable)."),
    rate_per_s: float | None = typer.Option(None, help="Data-plane calls per second."),
    daily_quota: int | None = typer.Option(None, help="Data-plane calls per UTC day."),
) -> None:
    """Create a key. Its secret is printed once; keep it somewhere safe.

    Four-eyes approvals compare owners: give each person their own --owner.

    Example: modelyard keys create --owner alice --role developer@fraud --role viewer
    """
    emit(operations().create_key(owner, role, rate_per_s=rate_per_s, daily_quota=daily_quota),
         _show_secret)


@app.command("list")
@handle_errors
def list_keys() -> None:
    """List keys: prefix, owner, roles, last use (never the secrets).

    Example: modelyard --json keys list
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


def _write_new(path: Path, data: bytes, mode: int) -> None:
    """Write ``path`` atomically with ``mode``, refusing to replace an existing file: the
    bytes go to a temporary file first, which is then hard-linked to its name (a link never
    replaces anything); where links are unsupported it is renamed after a last check."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".signing-")
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        try:
            os.link(tmp, path)
        except FileExistsError:
            raise
        except OSError as exc:
            if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV,
                                 errno.EMLINK, errno.ENOSYS):
                raise
            if path.exists():
                raise FileExistsError(errno.EEXIST, "file exists", str(path)) from None
            os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)


@app.command("signing-keygen")
@handle_errors
def signing_keygen(
    out: Path = typer.Option(..., "--out", "-o", metavar="DIR",
                             help="Folder for modelyard-signing.key (private, mode 0600) and "
                             "modelyard-signing.pub (created if missing)."),
) -> None:
    """Make an Ed25519 key pair for signing model versions (local; never sent anywhere).

    Refuses to overwrite an existing key. Give the .pub to a project
    (projects update NAME --trust-key DIR/modelyard-signing.pub) and sign with the .key
    (models sign NAME:VERSION --key DIR/modelyard-signing.key).

    Example: modelyard keys signing-keygen --out ~/.modelyard
    """
    from modelyard.governance import signing

    private_path, public_path = out / SIGNING_KEY, out / SIGNING_PUB
    try:
        out.mkdir(parents=True, exist_ok=True, mode=0o700)
    except OSError as exc:
        raise ValidationFailed(f"cannot create {out}: {exc.strerror or exc}",
                               field="out") from None
    for path in (private_path, public_path):
        if path.exists() or path.is_symlink():
            raise AlreadyExists(f"{path} already exists; refusing to overwrite a key (move it "
                                "away or choose another --out)", field="out")
    private_pem, public_pem = signing.generate_keypair()
    written: list[Path] = []
    try:
        for path, data, mode in ((private_path, private_pem, 0o600),
                                 (public_path, public_pem, 0o644)):
            _write_new(path, data, mode)
            written.append(path)
    except FileExistsError:
        for path in written:  # half a pair is worse than none
            with contextlib.suppress(OSError):
                path.unlink()
        raise AlreadyExists(f"a key appeared in {out} meanwhile; refusing to overwrite it",
                            field="out") from None
    except OSError as exc:
        for path in written:
            with contextlib.suppress(OSError):
                path.unlink()
        raise ValidationFailed(f"cannot write the key pair into {out}: {exc.strerror or exc}",
                               field="out") from None
    result = {"key_id": signing.key_id(public_pem), "private_key": str(private_path),
              "public_key": str(public_path)}

    def render(d: dict[str, Any]) -> None:
        console.print(f"signing key id [bold]{d['key_id']}[/bold]", highlight=False)
        console.print(f"  private: {d['private_key']} (mode 0600; keep it secret)",
                      markup=False, highlight=False, soft_wrap=True)
        console.print(f"  public:  {d['public_key']}", markup=False, highlight=False,
                      soft_wrap=True)
        console.print(f"trust it: modelyard projects update PROJECT --trust-key "
                      f"{d['public_key']}", markup=False, highlight=False, soft_wrap=True)

    emit(result, render)
