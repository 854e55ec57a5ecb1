"""The CLI through Typer's runner, against a real yard on disk."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import skops.io as sio
from typer.testing import CliRunner

from modelyard.cli.main import app
from modelyard.serving.server import free_port

runner = CliRunner()


def run(yard: Path, *args: str, ok: bool = True) -> str:
    result = runner.invoke(app, ["--yard", str(yard), *args])
    if ok:
        assert result.exit_code == 0, result.output
    else:
        assert result.exit_code != 0, result.output
    return result.output


@pytest.fixture
def yard_dir(tmp_path: Path) -> Path:
    path = tmp_path / "yard"
    out = run(path, "init")
    assert "admin key" in out
    return path


@pytest.fixture
def model_files(tmp_path: Path, classifier, tabular) -> tuple[Path, Path]:  # type: ignore[no-untyped-def]
    x, _, _ = tabular
    skops_file = tmp_path / "churn.skops"
    sio.dump(classifier, skops_file)
    sample = tmp_path / "sample.npy"
    np.save(sample, x[:4])
    return skops_file, sample


def test_init_writes_a_private_key_and_refuses_nothing_on_rerun(yard_dir: Path) -> None:
    key_file = yard_dir / "admin.key"
    assert key_file.stat().st_mode & 0o777 == 0o600
    assert key_file.read_text().startswith("my_")
    out = run(yard_dir, "init")
    assert "already existed" in out


def test_commands_without_a_yard_fail_with_one_line(tmp_path: Path) -> None:
    result = runner.invoke(app, ["--yard", str(tmp_path / "none"), "models", "list"])
    assert result.exit_code == 1
    assert "yard_not_initialised" in result.output
    assert not (tmp_path / "none").exists()


def test_register_list_show_alias_and_serve_in_process(
    yard_dir: Path, model_files: tuple[Path, Path], classifier, tabular  # type: ignore[no-untyped-def]
) -> None:
    skops_file, sample = model_files
    x, _, _ = tabular
    out = run(yard_dir, "models", "register", "churn", str(skops_file), "--sample", str(sample),
              "--tag", "team=growth", "--metric", "auc=0.91", "--param", "C=1.0")
    assert "churn:1" in out
    run(yard_dir, "models", "register", "churn", str(skops_file), "--sample", str(sample),
        "--to-onnx")
    listed = json.loads(run(yard_dir, "--json", "models", "list"))
    assert listed[0]["name"] == "churn" and listed[0]["latest_version"] == 2
    shown = json.loads(run(yard_dir, "--json", "models", "show", "churn:2"))
    assert shown["flavor"] == "onnx"
    assert shown["signature"]["inputs"][0]["shape"] == [-1, 4]
    first = json.loads(run(yard_dir, "--json", "models", "show", "churn:1"))
    assert first["lineage"]["metrics"] == {"auc": 0.91}
    assert first["lineage"]["tags"] == {"team": "growth"}
    run(yard_dir, "models", "alias", "churn", "champion", "2")
    assert json.loads(run(yard_dir, "--json", "models", "show", "churn@champion"))["version"] == 2
    found = json.loads(run(yard_dir, "--json", "models", "search", "--tag", "team=growth"))
    assert [v["version"] for v in found] == [1]

    run(yard_dir, "endpoints", "create", "churn", "--model", "churn@champion")
    assert "churn@champion" in run(yard_dir, "endpoints", "list")
    rows = x[:2].tolist()
    result = json.loads(run(yard_dir, "--json", "predict", "churn", "-d", json.dumps(rows)))
    np.testing.assert_allclose(result["probabilities"], classifier.predict_proba(x[:2]),
                               rtol=1e-4, atol=1e-5)


def test_register_with_training_data_attaches_the_reference_profile(
    yard_dir: Path, model_files: tuple[Path, Path], tabular, tmp_path: Path  # type: ignore[no-untyped-def]
) -> None:
    skops_file, sample = model_files
    train = tmp_path / "train.npy"
    rows = tabular[0][:300]
    np.save(train, rows)
    out = run(yard_dir, "models", "register", "churn", str(skops_file), "--sample", str(sample),
              "--data", str(train))
    assert "reference profile from" in out
    shown = json.loads(run(yard_dir, "--json", "models", "profile", "churn:1"))
    assert shown["profile"]["rows"] == len(rows)
    assert json.loads(run(yard_dir, "--json", "models", "show", "churn:1"))[
        "lineage"]["data_fingerprint"]
    # A file the profile cannot be read from: registered all the same, with the reason.
    odd = tmp_path / "train.parquet"
    odd.write_bytes(b"PAR1")
    out = run(yard_dir, "models", "register", "churn", str(skops_file), "--sample", str(sample),
              "--data", str(odd))
    assert "churn:2" in out and "reference profile" not in out


def test_failures_exit_non_zero_with_the_reason(
    yard_dir: Path, model_files: tuple[Path, Path]
) -> None:
    skops_file, sample = model_files
    run(yard_dir, "models", "register", "churn", str(skops_file), "--sample", str(sample))
    run(yard_dir, "endpoints", "create", "churn", "--model", "churn")
    out = run(yard_dir, "models", "delete", "churn", "--yes", ok=False)
    assert "in_use" in out and "churn" in out
    out = run(yard_dir, "predict", "churn", "-d", "[[1, 2]]", ok=False)
    assert "invalid_input" in out and "inputs.input" in out
    out = run(yard_dir, "models", "alias", "churn", "champion", "9", ok=False)
    assert "version_not_found" in out
    out = run(yard_dir, "endpoints", "create", "x", "--model", "nope@champion", ok=False)
    assert "model_not_found" in out
    pickle_file = skops_file.with_suffix(".joblib")
    import joblib

    joblib.dump({"not": "a model"}, pickle_file)
    out = run(yard_dir, "models", "register", "evil", str(pickle_file), ok=False)
    assert "untrusted_artifact" in out
    run(yard_dir, "endpoints", "delete", "churn", "--yes")
    run(yard_dir, "models", "delete", "churn", "--yes")
    assert "no models yet" in run(yard_dir, "models", "list").lower()


def _commands(group: object, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    import typer.main

    click_group = typer.main.get_command(group)  # type: ignore[arg-type]
    out: list[tuple[str, ...]] = []

    def walk(cmd: object, path: tuple[str, ...]) -> None:
        subs = getattr(cmd, "commands", None)
        if subs:
            for name, sub in subs.items():
                walk(sub, (*path, name))
        else:
            out.append(path)

    walk(click_group, prefix)
    return out


def test_every_command_has_help_with_an_example() -> None:
    commands = _commands(app)
    assert ("models", "register") in commands and ("serve",) in commands
    for path in commands:
        result = runner.invoke(app, [*path, "--help"])
        assert result.exit_code == 0, path
        assert "Example:" in result.output, path


@pytest.mark.slow
def test_demo_check_passes_on_a_fresh_yard(tmp_path: Path) -> None:
    out = run(tmp_path / "demo-yard", "demo", "--check", "--port", str(free_port()))
    assert "demo check passed" in out
    # A second run reuses the registered champions instead of piling up versions.
    out = run(tmp_path / "demo-yard", "demo", "--check", "--port", str(free_port()))
    assert "already registered" in out


def test_keys_are_created_shown_once_listed_and_revoked(yard_dir: Path) -> None:
    created = json.loads(run(yard_dir, "--json", "keys", "create", "--owner", "ci", "--role",
                             "developer"))
    assert created["key"].startswith(created["prefix"])
    listed = json.loads(run(yard_dir, "--json", "keys", "list"))
    assert [k["owner"] for k in listed] == ["admin", "ci"]
    assert created["key"] not in json.dumps(listed)
    rotated = json.loads(run(yard_dir, "--json", "keys", "rotate", created["prefix"]))
    assert rotated["replaces"] == created["prefix"]
    run(yard_dir, "keys", "revoke", rotated["prefix"], "--yes")
    out = run(yard_dir, "keys", "create", "--owner", "x", "--role", "root", ok=False)
    assert "validation_failed" in out


def test_gc_lists_then_deletes_only_unreferenced_artifacts(
    yard_dir: Path, model_files: tuple[Path, Path], classifier, tabular  # type: ignore[no-untyped-def]
) -> None:
    skops_file, sample = model_files
    run(yard_dir, "models", "register", "keep", str(skops_file), "--sample", str(sample))
    run(yard_dir, "models", "register", "gone", str(skops_file), "--sample", str(sample),
        "--to-onnx")
    run(yard_dir, "models", "delete", "gone", "--yes")
    listed = json.loads(run(yard_dir, "--json", "gc", "--min-age-s", "0"))
    assert len(listed["unreferenced"]) == 1
    assert json.loads(run(yard_dir, "--json", "gc"))["unreferenced"] == []  # too young
    deleted = json.loads(run(yard_dir, "--json", "gc", "--yes", "--min-age-s", "0"))
    assert deleted["deleted"] == listed["unreferenced"]
    assert json.loads(run(yard_dir, "--json", "gc", "--min-age-s", "0"))["unreferenced"] == []
    x, _, _ = tabular
    out = json.loads(run(yard_dir, "--json", "predict", "keep", "-d", json.dumps(x[:1].tolist())))
    assert "probabilities" in out  # the model still in use kept its artifact
