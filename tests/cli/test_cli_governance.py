"""Governance through the CLI: projects, four-eyes approvals, signing keys and signatures,
in-process (--yard) and through a server (--url/--key) with a second person's key."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import skops.io as sio
from typer.testing import CliRunner

from modelyard import Client
from modelyard.cli.main import app
from modelyard.governance import signing
from modelyard.serving.server import BackgroundServer

runner = CliRunner()


def cli(*args: str, ok: bool = True) -> str:
    result = runner.invoke(app, list(args))
    if ok:
        assert result.exit_code == 0, result.output
    else:
        assert result.exit_code != 0, result.output
    return result.output


@pytest.fixture
def yard_dir(tmp_path: Path) -> Path:
    path = tmp_path / "yard"
    cli("--yard", str(path), "init")
    return path


@pytest.fixture
def model_file(tmp_path: Path, classifier, tabular) -> tuple[str, str]:  # type: ignore[no-untyped-def]
    x, _, _ = tabular
    skops_file = tmp_path / "churn.skops"
    sio.dump(classifier, skops_file)
    sample = tmp_path / "sample.npy"
    np.save(sample, x[:4])
    return str(skops_file), str(sample)


def _keygen(folder: Path) -> tuple[Path, Path, str]:
    out = cli("keys", "signing-keygen", "--out", str(folder))
    private, public = folder / "modelyard-signing.key", folder / "modelyard-signing.pub"
    kid = signing.key_id(public.read_bytes())
    assert kid in out
    return private, public, kid


# -- signing keys ------------------------------------------------------------------------
def test_signing_keygen_writes_a_private_pair_and_refuses_to_overwrite(tmp_path: Path) -> None:
    folder = tmp_path / "keys" / "nested"
    private, public, kid = _keygen(folder)
    assert private.stat().st_mode & 0o777 == 0o600
    assert b"PRIVATE KEY" in private.read_bytes() and b"PUBLIC KEY" in public.read_bytes()
    assert signing.sign(private.read_bytes(), "m", "0" * 64)["key_id"] == kid
    assert not [p for p in folder.iterdir() if p.name.startswith(".")]  # no temp files left

    before = private.read_bytes()
    out = cli("keys", "signing-keygen", "--out", str(folder), ok=False)
    assert "already_exists" in out and "refusing to overwrite" in out
    assert private.read_bytes() == before

    # A lone public key is not replaced either, and no private key is written beside it.
    other = tmp_path / "other"
    other.mkdir()
    (other / "modelyard-signing.pub").write_text("mine")
    cli("keys", "signing-keygen", "--out", str(other), ok=False)
    assert not (other / "modelyard-signing.key").exists()
    assert (other / "modelyard-signing.pub").read_text() == "mine"

    made = json.loads(cli("--json", "keys", "signing-keygen", "--out", str(tmp_path / "j")))
    assert made["key_id"] == signing.key_id(Path(made["public_key"]).read_bytes())


# -- projects ----------------------------------------------------------------------------
def test_projects_create_show_update_and_list(yard_dir: Path, tmp_path: Path) -> None:
    y = ("--yard", str(yard_dir))
    _, public, kid = _keygen(tmp_path / "k1")
    _, public2, kid2 = _keygen(tmp_path / "k2")
    out = cli(*y, "projects", "create", "fraud", "--description", "fraud [scoring]",
              "--approvals", "2", "--approval-actions", "alias:production",
              "--approval-expiry-h", "12", "--trust-key", str(public),
              "--card-required", "intended_use,owners")
    assert "project fraud" in out and "fraud [scoring]" in out
    shown = cli(*y, "projects", "show", "fraud")
    assert "2 for alias:production" in shown and "12h" in shown
    assert kid in shown and "intended_use, owners" in shown
    assert "signatures: not required" in shown

    data = json.loads(cli(*y, "--json", "projects", "show", "fraud"))
    assert data["policy"]["approvals_required"] == 2
    assert data["policy"]["trusted_keys"] == [public.read_text()]

    # Only what is given changes; --trust-key adds to the trusted keys.
    cli(*y, "projects", "update", "fraud", "--trust-key", str(public2), "--require-signatures")
    data = json.loads(cli(*y, "--json", "projects", "show", "fraud"))
    policy = data["policy"]
    assert policy["trusted_keys"] == [public.read_text(), public2.read_text()]
    assert policy["signatures_required"] is True
    assert policy["approvals_required"] == 2 and policy["approval_expiry_h"] == 12
    assert data["description"] == "fraud [scoring]"

    cli(*y, "projects", "update", "fraud", "--untrust-key", kid, "--no-require-signatures",
        "--card-required", "default", "--description", "new")
    data = json.loads(cli(*y, "--json", "projects", "show", "fraud"))
    assert data["policy"]["trusted_keys"] == [public2.read_text()]
    assert data["policy"]["signatures_required"] is False
    assert data["policy"]["card_required"] is None and data["description"] == "new"
    shown = cli(*y, "projects", "show", "fraud")
    assert "yard default" in shown and kid2 in shown and kid not in shown

    listed = json.loads(cli(*y, "--json", "projects", "list"))
    assert {p["name"] for p in listed} == {"default", "fraud"}
    assert "fraud" in cli(*y, "projects", "list")

    out = cli(*y, "projects", "update", "fraud", ok=False)
    assert "nothing to change" in out
    out = cli(*y, "projects", "update", "fraud", "--approval-actions", "models:delete", ok=False)
    assert "validation_failed" in out and "models:delete" in out
    out = cli(*y, "projects", "update", "fraud", "--untrust-key", "0" * 16, ok=False)
    assert "does not trust" in out
    out = cli(*y, "projects", "create", "bad", "--trust-key",
              str(tmp_path / "k1" / "modelyard-signing.key"), ok=False)
    assert "private key" in out
    out = cli(*y, "projects", "create", "fraud", ok=False)
    assert "already_exists" in out


# -- approvals in-process ----------------------------------------------------------------
def test_production_alias_waits_for_someone_else_in_process(
    yard_dir: Path, model_file: tuple[str, str]
) -> None:
    y = ("--yard", str(yard_dir))
    skops_file, sample = model_file
    cli(*y, "projects", "create", "fraud", "--approvals", "1", "--card-required", "")
    out = cli(*y, "models", "register", "churn", skops_file, "--sample", sample,
              "--project", "fraud")
    assert "churn:1" in out
    assert json.loads(cli(*y, "--json", "models", "show", "churn:1"))["project"] == "fraud"

    out = cli(*y, "models", "alias", "churn", "production", "1")
    match = re.search(r"waiting for 1 approval: modelyard approvals approve (\d+)", out)
    assert match, out
    request = match.group(1)
    assert "pending" in out
    cli(*y, "models", "show", "churn@production", ok=False)  # not moved yet
    cli(*y, "models", "alias", "churn", "champion", "1")  # other aliases move at once

    listed = json.loads(cli(*y, "--json", "approvals", "list", "--status", "pending",
                            "--project", "fraud"))
    assert [a["id"] for a in listed] == [int(request)]
    assert listed[0]["action"] == "alias:production" and listed[0]["required"] == 1
    table = cli(*y, "approvals", "list")
    assert "fraud" in table and "0/1" in table and "pending" in table
    shown = cli(*y, "approvals", "show", request)
    assert "point churn@production at version 1" in shown

    # The yard's own admin is still the requester: four eyes refuse.
    out = cli(*y, "approvals", "approve", request, ok=False)
    assert "self_approval" in out and "own request" in out
    assert "no approval requests" in cli(*y, "approvals", "list", "--status", "executed")

    out = cli(*y, "approvals", "cancel", request)
    assert f"cancelled request {request}" in out
    out = cli(*y, "approvals", "approve", request, ok=False)
    assert "approval_closed" in out
    cli(*y, "approvals", "show", "999", ok=False)


# -- through a server, with a second person --------------------------------------------
def test_four_eyes_and_signing_through_the_server(
    server: BackgroundServer, admin_key: str, client: Client, model_file: tuple[str, str],
    tmp_path: Path,
) -> None:
    admin = ("--url", server.url, "--key", admin_key)
    skops_file, sample = model_file
    private, public, kid = _keygen(tmp_path / "keys")
    cli(*admin, "projects", "create", "fraud", "--approvals", "1", "--card-required", "",
        "--trust-key", str(public))
    # (a grant names a project that exists: created first)
    bob = ("--url", server.url, "--key",
           client.create_key("bob", ["approver@fraud", "viewer"])["key"])
    cli(*admin, "models", "register", "churn", skops_file, "--sample", sample,
        "--project", "fraud")

    # Moving production waits; the requester cannot approve it.
    pending = json.loads(cli(*admin, "--json", "models", "alias", "churn", "production", "1"))
    assert pending["status"] == "pending" and pending["requested_by"].startswith("key:")
    request = str(pending["id"])
    out = cli(*admin, "models", "alias", "churn", "production", "1")
    assert "waiting for 1 approval: modelyard approvals approve" in out
    second = re.search(r"approvals approve (\d+)", out).group(1)  # type: ignore[union-attr]
    out = cli(*admin, "approvals", "approve", request, ok=False)
    assert "self_approval" in out

    # Bob (approver in fraud only) approves: the alias moves, under the requester's name.
    out = cli(*bob, "approvals", "approve", request, "--comment", "eval looks fine")
    assert "executed" in out and "1/1" in out
    assert client.version("churn@production")["version"] == 1
    shown = cli(*bob, "approvals", "show", request)
    assert "approve by bob" in shown and "executed" in shown
    votes = json.loads(cli(*bob, "--json", "approvals", "show", request))["votes"]
    assert [(v["subject"], v["comment"]) for v in votes] == [("bob", "eval looks fine")]
    out = cli(*bob, "approvals", "reject", second, "-c", "duplicate")
    assert f"rejected request {second}" in out
    out = cli(*bob, "approvals", "approve", request, ok=False)
    assert "approval_closed" in out

    # Removing production waits too.
    out = cli(*admin, "models", "alias", "churn", "production", "--delete")
    assert "pending" in out and "removing churn@production" in out
    assert client.version("churn@production")["version"] == 1

    # An endpoint's auth change waits; its other changes apply at once.
    cli(*admin, "endpoints", "create", "churn", "--model", "churn:1")
    assert client.endpoint("churn")["auth"] == "key"  # the default
    out = cli(*admin, "endpoints", "update", "churn", "--auth", "jwt", "--timeout-ms", "750")
    assert "other changes are applied" in out and "waiting for 1 approval" in out
    endpoint = client.endpoint("churn")
    assert endpoint["auth"] == "key" and endpoint["timeout_ms"] == 750
    out = cli(*admin, "endpoints", "update", "churn", "--timeout-ms", "800")
    assert "(key)" in out

    # Signing with a local private key; the server only sees the signature.
    out = cli(*admin, "models", "signatures", "churn:1")
    assert "no signatures" in out
    out = cli(*admin, "models", "sign", "churn:1", "--key", str(private))
    assert kid in out
    listed = json.loads(cli(*bob, "--json", "models", "signatures", "churn@production"))
    assert [s["key_id"] for s in listed] == [kid]
    assert kid in cli(*bob, "models", "signatures", "churn:1")
    stranger, _, _ = _keygen(tmp_path / "stranger")
    out = cli(*admin, "models", "sign", "churn:1", "--key", str(stranger), ok=False)
    assert "does not verify" in out
    out = cli(*admin, "models", "sign", "churn", "--key", str(private), ok=False)
    assert "churn:VERSION" in out
    out = cli(*bob, "models", "sign", "churn:1", "--key", str(private), ok=False)
    assert "forbidden" in out


def test_signatures_required_in_process(yard_dir: Path, model_file: tuple[str, str],
                                        tmp_path: Path) -> None:
    y = ("--yard", str(yard_dir))
    skops_file, sample = model_file
    private, public, kid = _keygen(tmp_path / "keys")
    cli(*y, "projects", "create", "signed", "--require-signatures", "--trust-key", str(public))
    cli(*y, "models", "register", "churn", skops_file, "--sample", sample, "--project", "signed")
    out = cli(*y, "predict", "churn", "-d", "[[0, 0, 0, 0]]", ok=False)
    assert "signature_required" in out
    out = cli(*y, "models", "sign", "churn:1", "--key", str(private))
    assert f"signed churn:1 with key {kid}" in out
    assert kid in cli(*y, "models", "signatures", "churn:1")
    cli(*y, "predict", "churn", "-d", "[[0, 0, 0, 0]]")
