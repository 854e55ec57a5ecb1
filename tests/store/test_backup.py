"""Backup while the yard serves, restore into fresh yards of either dialect, and verify:
the audit chain, every artifact's sha256, the row counts, and that the restored yard serves."""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import sqlalchemy as sa
from sklearn.linear_model import LogisticRegression
from typer.testing import CliRunner

from db_support import database
from modelyard import Client, Yard
from modelyard.cli.main import app
from modelyard.governance import audit
from modelyard.serving.server import BackgroundServer
from modelyard.settings import Settings
from modelyard.store.backup import Manifest, create_backup, read_manifest
from modelyard.store.backup.progress import Advance
from modelyard.store.db import make_engine

runner = CliRunner()


def cli(*args: str, ok: bool = True) -> Any:
    result = runner.invoke(app, list(args))
    assert (result.exit_code == 0) == ok, result.output
    return json.loads(result.stdout) if ok and "--json" in args else result.output


class WaitForAWrite:
    """Progress that holds the backup, its snapshot open, until the server has committed
    another version: the write happens during the backup, not before or after it."""

    def __init__(self, registered: list[int]) -> None:
        self.registered = registered
        self.waited = False

    def task(self, description: str, total: float) -> Advance:
        def advance(_amount: float) -> None:
            if description.startswith("tables") and not self.waited:
                self.waited = True
                seen = self.registered[0]
                deadline = time.monotonic() + 60
                while self.registered[0] <= seen:
                    assert time.monotonic() < deadline, "no version was registered meanwhile"
                    time.sleep(0.02)
        return advance


def count_rows(url: str) -> dict[str, int]:
    engine = make_engine(url)
    try:
        with engine.connect() as connection:
            meta = sa.MetaData()
            meta.reflect(connection)
            return {name: int(connection.scalar(sa.select(sa.func.count()).select_from(t)) or 0)
                    for name, t in meta.tables.items() if name != "alembic_version"}
    finally:
        engine.dispose()


def serve_with_traffic_and_writes(settings: Settings, classifier: LogisticRegression,
                                  x: np.ndarray, out: Path) -> tuple[Path, str, int]:
    """A yard serving predictions and taking registrations while it is backed up. Returns
    the archive, the admin key and how many versions the yard had at the end."""
    yard, key = Yard.init(settings=settings)
    assert key is not None
    try:
        with BackgroundServer(yard) as server, Client(server.url, key) as client:
            client.register("churn", classifier, sample=x[:3])
            client.create_endpoint("churn", "churn:1")
            client.wait_ready("churn")
            stop, failures = threading.Event(), []
            registered, predicted = [1], [0]

            def traffic() -> None:
                with httpx.Client(base_url=server.url, timeout=30,
                                  headers={"authorization": f"Bearer {key}"}) as http:
                    while not stop.is_set():
                        answer = http.post("/endpoints/churn/predict",
                                           json={"inputs": x[:4].tolist()})
                        if answer.status_code != 200:
                            failures.append(answer.text)
                        predicted[0] += 1

            def writes() -> None:
                with Client(server.url, key) as writer:
                    while not stop.is_set():
                        c = 0.1 * (registered[0] + 1)  # another model, another artifact
                        model = LogisticRegression(C=c).fit(x, classifier.predict(x))
                        version = writer.register("churn", model, sample=x[:3])
                        writer.set_alias("churn", "challenger", version["version"])
                        registered[0] += 1

            threads = [threading.Thread(target=traffic), threading.Thread(target=writes)]
            for thread in threads:
                thread.start()
            try:
                while predicted[0] < 20 or registered[0] < 2:
                    time.sleep(0.02)
                waiter = WaitForAWrite(registered)
                result = create_backup(settings.database_url, yard.artifacts, out,
                                       audit_check=lambda s: audit.verify(s).to_dict(),
                                       progress=waiter)
                seen = predicted[0]
                while predicted[0] < seen + 10:  # the server still answers after it
                    time.sleep(0.02)
            finally:
                stop.set()
                for thread in threads:
                    thread.join(timeout=60)
            assert waiter.waited and not failures, failures[:3]
        versions = len(yard.versions("churn"))
    finally:
        yard.close()
    # The snapshot did not see the versions committed while it was open.
    assert result.manifest.summary()["rows"]["model_versions"] < versions
    return result.path, key, versions


def test_backup_while_serving_restores_into_sqlite_and_postgresql(
        tmp_path: Path, database_url: str, classifier: LogisticRegression,
        tabular: tuple[np.ndarray, np.ndarray, np.ndarray]) -> None:
    x = tabular[0]
    source = Settings.load(tmp_path / "source", env={}, database_url=database_url,
                           inference_log_flush_s=0.05, inference_log_max_per_s=0)
    archive, key, _ = serve_with_traffic_and_writes(source, classifier, x, tmp_path)
    assert archive.stat().st_mode & 0o777 == 0o600
    manifest = read_manifest(archive)
    assert manifest.audit is not None and manifest.audit.ok
    rows = {t.name: t.rows for t in manifest.tables}
    assert rows["inference_log"] > 0 and rows["model_versions"] >= 2
    assert rows["audit_log"] == manifest.audit.records
    # The artifacts of the snapshot's versions; not those registered after it.
    assert {a.sha256 for a in manifest.artifacts} < set(_digests(source.database_url))

    for kind in ("sqlite", "postgresql"):
        home = tmp_path / f"restored-{kind}"
        with database(kind, home) as url:
            report = cli("--yard", str(home), "--json", "restore", str(archive), "--db", url)
            assert report["audit"]["ok"] and report["audit"]["records"] == rows["audit_log"]
            assert report["artifacts_verified"] == len(manifest.artifacts)
            assert report["rows"] == rows
            assert count_rows(url) == rows  # every table, counted afresh
            _check_restored(Settings.load(home, env={}, database_url=url), manifest, key,
                            classifier, x)


def _digests(url: str) -> list[str]:
    engine = make_engine(url)
    try:
        with engine.connect() as connection:
            return list(connection.scalars(sa.text(
                "SELECT DISTINCT artifact_digest FROM model_versions")))
    finally:
        engine.dispose()


def _check_restored(settings: Settings, manifest: Manifest, key: str,
                    classifier: LogisticRegression, x: np.ndarray) -> None:
    yard = Yard(settings=settings)
    try:
        assert yard.audit_verify()["ok"]
        for artifact in manifest.artifacts:  # every artifact, hashed from the new store
            digest = hashlib.sha256()
            for chunk in yard.artifacts.stream(artifact.sha256):
                digest.update(chunk)
            assert digest.hexdigest() == artifact.sha256
        # The restored yard serves the endpoint, to the source's admin key.
        with BackgroundServer(yard) as server, Client(server.url, key) as client:
            client.wait_ready("churn")
            answer = client.predict("churn", {"input": x[:5]})
            assert answer["label"].tolist() == classifier.predict(x[:5]).tolist()
            client.register("churn", classifier, sample=x[:3])  # ids continue past the rows
        assert yard.audit_verify()["ok"]
    finally:
        yard.close()


@pytest.fixture
def small_backup(tmp_path: Path, classifier: LogisticRegression,
                 tabular: tuple[np.ndarray, np.ndarray, np.ndarray]) -> Path:
    """A SQLite yard with one model and endpoint, backed up through the CLI."""
    home = tmp_path / "small"
    yard, _ = Yard.init(settings=Settings.load(home, env={}))
    try:
        yard.register("churn", classifier, sample=tabular[0][:3])
        yard.create_endpoint("churn", "churn:1")
    finally:
        yard.close()
    report = cli("--yard", str(home), "--json", "backup", str(tmp_path / "small.tar"))
    assert report["path"] == str(tmp_path / "small.tar") and report["audit"]["ok"]
    return tmp_path / "small.tar"


def test_a_round_trip_through_either_dialect_gives_the_same_rows(
        tmp_path: Path, small_backup: Path, database_url: str) -> None:
    home = tmp_path / "middle"
    cli("--yard", str(home), "restore", str(small_backup), "--db", database_url)
    cli("--yard", str(home), "backup", str(tmp_path / "again.tar"), "--db", database_url)
    first, again = read_manifest(small_backup), read_manifest(tmp_path / "again.tar")
    tables = {t.member for t in first.tables}
    # Every table member is the same bytes: datetimes, JSON text, NULLs and ids all survive.
    assert {m: first.members[m] for m in tables} == {m: again.members[m] for m in tables}
    assert first.artifacts == again.artifacts and again.audit == first.audit


def test_backup_into_a_folder_names_the_file_and_never_overwrites(
        tmp_path: Path, small_backup: Path) -> None:
    home = tmp_path / "small"
    folder = tmp_path / "backups"
    folder.mkdir()
    report = cli("--yard", str(home), "--json", "backup", str(folder))
    written = Path(report["path"])
    assert written.parent == folder and written.name.startswith("modelyard-backup-")
    out = cli("--yard", str(home), "backup", str(small_backup), ok=False)
    assert "backup_failed" in out and "exists" in out
    assert sorted(p.name for p in folder.iterdir()) == [written.name]  # no temporary left
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


def test_a_damaged_artifact_in_the_store_fails_the_backup_and_leaves_nothing(
        tmp_path: Path, small_backup: Path) -> None:
    home = tmp_path / "small"
    (blob,) = (home / "artifacts" / "sha256").rglob("*.tar")
    data = bytearray(blob.read_bytes())
    data[len(data) // 2] ^= 0xFF
    blob.write_bytes(bytes(data))
    out = cli("--yard", str(home), "backup", str(tmp_path / "rotten.tar"), ok=False)
    assert "backup_failed" in out and "fails its sha256 check" in out
    assert sorted(p.name for p in tmp_path.iterdir() if "rotten" in p.name or
                  p.name.startswith(".")) == []


def test_backing_up_what_is_not_a_yard_says_so(tmp_path: Path) -> None:
    out = cli("--yard", str(tmp_path), "backup", str(tmp_path / "x.tar"),
              "--db", f"sqlite:///{tmp_path / 'none.db'}",
              "--artifacts", str(tmp_path / "artifacts"), ok=False)
    assert "backup_failed" in out and "no database at" in out
    assert not (tmp_path / "none.db").exists() and not (tmp_path / "x.tar").exists()
    empty = tmp_path / "empty.db"
    sqlite3.connect(empty).close()
    out = cli("--yard", str(tmp_path), "backup", str(tmp_path / "x.tar"),
              "--db", f"sqlite:///{empty}",
              "--artifacts", str(tmp_path / "artifacts"), ok=False)
    assert "backup_failed" in out and "no Modelyard schema" in out
    assert not (tmp_path / "x.tar").exists()


def test_an_unreachable_database_is_one_clear_line(tmp_path: Path, small_backup: Path) -> None:
    nowhere = "postgresql://postgres:hunter2@127.0.0.1:1/test"  # nothing listens on port 1
    out = cli("--yard", str(tmp_path / "t"), "restore", str(small_backup), "--db", nowhere,
              ok=False)
    assert "restore_failed" in out and "nothing was committed" in out
    assert "hunter2" not in out
    out = cli("--yard", str(tmp_path / "t"), "backup", str(tmp_path / "n.tar"), "--db", nowhere,
              ok=False)
    assert "backup_failed" in out and "cannot read the metadata store" in out
    assert "hunter2" not in out


def test_check_reads_an_archive_without_writing(tmp_path: Path, small_backup: Path) -> None:
    out = cli("restore", "--check", str(small_backup))
    assert "archive intact" in out and "audit chain intact" in out


def _rewrite(archive: Path, out: Path, edit: dict[str, bytes | None],
             fix_manifest: bool) -> Path:
    """A copy of ``archive`` with members replaced (or dropped: None); with
    ``fix_manifest`` the manifest's sizes and hashes follow the edits."""
    import tarfile
    from io import BytesIO

    with tarfile.open(archive) as src:
        members = {m.name: src.extractfile(m).read() for m in src.getmembers()}  # type: ignore[union-attr]
    for name, data in edit.items():
        if data is None:
            members.pop(name)
        else:
            members[name] = data
    if fix_manifest:
        doc = json.loads(members["manifest.json"])
        for name, data in edit.items():
            if data is not None:
                doc["members"][name] = {"sha256": hashlib.sha256(data).hexdigest(),
                                        "size": len(data)}
        members["manifest.json"] = json.dumps(doc).encode()
    with tarfile.open(out, "w") as dst:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            dst.addfile(info, BytesIO(data))
    return out


def _table_member(archive: Path, name: str) -> bytes:
    import tarfile

    with tarfile.open(archive) as src:
        return src.extractfile(f"tables/{name}.jsonl.gz").read()  # type: ignore[union-attr]


def _untouched(home: Path) -> None:
    """Nothing was written: no database file, no artifact."""
    assert not (home / "yard.db").exists()
    assert list(home.rglob("*.tar")) == [] if home.exists() else True


def test_a_damaged_archive_is_refused_and_the_target_left_alone(
        tmp_path: Path, small_backup: Path) -> None:
    damaged = bytearray(_table_member(small_backup, "models"))
    damaged[len(damaged) // 2] ^= 0xFF  # one bit of rot, same size
    bad = _rewrite(small_backup, tmp_path / "bad.tar",
                   {"tables/models.jsonl.gz": bytes(damaged)}, fix_manifest=False)
    home = tmp_path / "target"
    out = cli("--yard", str(home), "restore", str(bad), ok=False)
    assert "backup_invalid" in out and "tables/models.jsonl.gz fails its sha256" in out
    _untouched(home)

    cut = tmp_path / "cut.tar"
    cut.write_bytes(small_backup.read_bytes()[: small_backup.stat().st_size // 2])
    out = cli("--yard", str(home), "restore", str(cut), ok=False)
    assert "backup_invalid" in out
    _untouched(home)

    no_manifest = _rewrite(small_backup, tmp_path / "nomanifest.tar",
                           {"manifest.json": None}, fix_manifest=False)
    out = cli("--yard", str(home), "restore", str(no_manifest), ok=False)
    assert "has no manifest.json" in out
    _untouched(home)

    out = cli("--yard", str(home), "restore", str(tmp_path / "nowhere.tar"), ok=False)
    assert "does not exist" in out


def test_a_load_that_fails_rolls_everything_back(tmp_path: Path, small_backup: Path,
                                                 database_url: str) -> None:
    import gzip

    # Consistent hashes, but a row twice: the insert fails half-way through the tables.
    rows = gzip.decompress(_table_member(small_backup, "model_versions"))
    twice = gzip.compress(rows + rows)
    bad = _rewrite(small_backup, tmp_path / "twice.tar",
                   {"tables/model_versions.jsonl.gz": twice}, fix_manifest=True)
    home = tmp_path / "target"
    out = cli("--yard", str(home), "restore", str(bad), "--db", database_url, ok=False)
    assert "restore_failed" in out and "model_versions" in out
    engine = make_engine(database_url)
    try:
        with engine.connect() as connection:  # not even the schema is left
            assert sa.inspect(connection).get_table_names() == []
    finally:
        engine.dispose()
    # The artifacts copied before the load are content-addressed blobs nothing uses; the
    # same restore, done right, goes through.
    out = cli("--yard", str(home), "restore", str(small_backup), "--db", database_url)
    assert "1 already there" in out and "audit chain intact" in out


def test_restore_refuses_a_target_that_is_not_empty(tmp_path: Path,
                                                    small_backup: Path) -> None:
    home = tmp_path / "busy"
    cli("--yard", str(home), "init")
    before = count_rows(f"sqlite:///{home / 'yard.db'}")
    out = cli("--yard", str(home), "restore", str(small_backup), ok=False)
    assert "restore_target_not_empty" in out and "modelyard init" in out
    assert count_rows(f"sqlite:///{home / 'yard.db'}") == before


def test_a_backup_from_an_older_schema_comes_up_to_head(tmp_path: Path) -> None:
    from modelyard.store.db import Database

    old = Database(f"sqlite:///{tmp_path / 'old.db'}")
    old.upgrade("0012")
    old.dispose()
    from modelyard.store.artifacts import ArtifactStore

    store = ArtifactStore(str(tmp_path / "artifacts"), tmp_path / "cache")
    result = create_backup(f"sqlite:///{tmp_path / 'old.db'}", store, tmp_path / "old.tar")
    assert result.manifest.revision == "0012"
    out = cli("--yard", str(tmp_path / "new"), "--json", "restore", str(tmp_path / "old.tar"))
    head = Database(f"sqlite:///{tmp_path / 'new' / 'yard.db'}")
    try:
        assert out["revision"] == "0012" and out["schema"] == head.head_revision()
        assert head.current_revision() == head.head_revision()
    finally:
        head.dispose()


def test_artifacts_on_s3_back_up_and_restore(tmp_path: Path, s3: Any,
                                             classifier: LogisticRegression,
                                             tabular: tuple[np.ndarray, np.ndarray,
                                                            np.ndarray]) -> None:
    from s3_support import S3Place

    place: S3Place = s3
    source = Settings.load(tmp_path / "s3src", env={}, artifacts_url=place.url,
                           artifacts_options=place.options_json)
    yard, _ = Yard.init(settings=source)
    try:
        digest = yard.register("churn", classifier, sample=tabular[0][:3]).artifact_digest
    finally:
        yard.close()
    env = {"MODELYARD_ARTIFACTS_OPTIONS": place.options_json}
    result = runner.invoke(app, ["--yard", str(tmp_path / "s3src"), "backup",
                                 str(tmp_path / "s3.tar"), "--artifacts", place.url], env=env)
    assert result.exit_code == 0, result.output
    target = place.url + "-restored"
    result = runner.invoke(app, ["--yard", str(tmp_path / "s3dst"), "restore",
                                 str(tmp_path / "s3.tar"), "--artifacts", target], env=env)
    assert result.exit_code == 0, result.output
    restored = S3Place(place.endpoint, target, place.options)
    assert restored.keys() == [f"sha256/{digest[:2]}/{digest}.tar"]
    with Yard(settings=Settings.load(tmp_path / "s3dst", env={}, artifacts_url=target,
                                     artifacts_options=place.options_json)) as again:
        got = again.predict("churn", {"input": tabular[0][:5]})
        assert got["label"].tolist() == classifier.predict(tabular[0][:5]).tolist()
