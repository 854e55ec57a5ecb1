"""The registry through ``Yard``, on SQLite and on PostgreSQL: versions, aliases, archive,
delete, search, not-found errors and a crash between the artifact write and the commit."""

from __future__ import annotations

import dataclasses
import itertools
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from modelyard import Yard
from modelyard.control.registry import RegistryService
from modelyard.domain.errors import (
    AliasNotFound,
    AlreadyExists,
    InUse,
    InvalidArtifact,
    ModelNotFound,
    NotFound,
    ValidationFailed,
    VersionArchived,
    VersionNotFound,
)
from modelyard.domain.registry import fingerprint
from modelyard.flavors.onnx import sklearn_to_onnx
from modelyard.store import endpoints as store_endpoints
from modelyard.store import registry as store_registry
from modelyard.store.archive import pack_to_file

Tabular = tuple[np.ndarray, np.ndarray, np.ndarray]


@pytest.fixture(scope="module")
def onnx_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small ONNX classifier saved once; registering it by path is fast and byte-stable."""
    rng = np.random.default_rng(3)
    x = rng.normal(size=(50, 4)).astype(np.float32)
    model = LogisticRegression().fit(x, (x[:, 0] > 0).astype(np.int64))
    path = tmp_path_factory.mktemp("onnx") / "model.onnx"
    path.write_bytes(sklearn_to_onnx(model, {"input": x}).SerializeToString())
    return path


def register(yard: Yard, name: str, path: Path, **kw: Any) -> int:
    return yard.register(name, path=path, **kw).version


def history(yard: Yard, name: str) -> list[tuple[str, int | None, int | None]]:
    return [(e["alias"], e["from_version"], e["to_version"])
            for e in yard.registry.alias_history(yard.principal, name)]


# -- versions -----------------------------------------------------------------------------


def test_versions_are_numbered_per_model(yard: Yard, onnx_file: Path) -> None:
    assert [register(yard, "churn", onnx_file) for _ in range(3)] == [1, 2, 3]
    assert register(yard, "fraud", onnx_file) == 1
    assert register(yard, "churn", onnx_file) == 4
    assert [v.version for v in yard.versions("churn")] == [1, 2, 3, 4]
    assert [v.version for v in yard.versions("fraud")] == [1]
    assert yard.model("churn").latest_version == 4
    assert yard.version("churn").version == 4
    assert yard.version("churn:2").ref == "churn:2"
    assert [m.name for m in yard.models()] == ["churn", "fraud"]


def test_version_records_what_was_registered(yard: Yard, classifier: Any,
                                             tabular: Tabular) -> None:
    x, _, _ = tabular
    v = yard.register("churn", classifier, sample=x[:8], params={"C": 1.0},
                      metrics={"auc": 0.91}, tags={"team": "risk"}, data=x,
                      code_revision="abc123", description="first")
    assert v.flavor == "sklearn" and v.status == "active" and v.aliases == ()
    assert v.created_by == yard.principal.name
    assert v.created_at.tzinfo is not None
    assert abs(datetime.now(UTC) - v.created_at) < timedelta(minutes=5)
    assert v.lineage.params == {"C": 1.0} and v.lineage.metrics == {"auc": 0.91}
    assert v.lineage.tags == {"team": "risk"} and v.lineage.code_revision == "abc123"
    assert v.lineage.data_fingerprint == fingerprint(x) and v.lineage.trusted is False
    assert v.description == "first"
    assert len(v.artifact_digest) == 64 and v.artifact_size > 0
    assert yard.artifacts.exists(v.artifact_digest)
    # A few sample rows are kept as OIP tensors.
    assert v.input_example is not None
    (example,) = v.input_example
    assert example["name"] == "input" and example["shape"] == [5, 4]
    # Read back from the database, the version is the same.
    again = yard.version("churn:1")
    assert again.to_dict() == v.to_dict()
    v2 = yard.register("churn", classifier, sample=x[:3], parent="churn:1")
    assert v2.lineage.parent == "churn:1"


def test_versions_are_immutable(yard: Yard, onnx_file: Path, classifier: Any,
                                tabular: Tabular) -> None:
    x, _, _ = tabular
    v1 = yard.register("churn", path=onnx_file)
    before = yard.version("churn:1").to_dict()
    yard.register("churn", classifier, sample=x[:3])
    yard.set_alias("churn", "champion", 2)
    after = yard.version("churn:1").to_dict()
    assert after == before
    with pytest.raises(dataclasses.FrozenInstanceError):
        v1.artifact_digest = "0" * 64  # type: ignore[misc]
    # Neither the Yard nor the service offers a way to change a version's content.
    for api in (Yard, RegistryService):
        verbs = [n for n in dir(api) if not n.startswith("_")]
        assert not [n for n in verbs if n.startswith(("update_version", "replace", "set_artifact",
                                                      "edit", "modify"))], verbs


def test_same_content_shares_one_blob(yard: Yard, onnx_file: Path) -> None:
    a = yard.register("churn", path=onnx_file)
    b = yard.register("other", path=onnx_file)
    assert a.artifact_digest == b.artifact_digest
    assert list(yard.artifacts.digests()) == [a.artifact_digest]
    assert yard.registry.unreferenced_artifacts() == []


def test_register_needs_exactly_one_of_object_or_path(yard: Yard, onnx_file: Path,
                                                      classifier: Any) -> None:
    with pytest.raises(ValidationFailed):
        yard.register("churn")
    with pytest.raises(ValidationFailed):
        yard.register("churn", classifier, path=onnx_file)
    with pytest.raises(ValidationFailed) as info:
        yard.register("bad name", path=onnx_file)
    assert info.value.field == "name"
    assert yard.models() == []


# -- aliases ------------------------------------------------------------------------------


def test_aliases_move_and_record_who_and_when(yard: Yard, onnx_file: Path) -> None:
    for _ in range(3):
        register(yard, "churn", onnx_file)
    start = datetime.now(UTC) - timedelta(seconds=5)
    a = yard.set_alias("churn", "champion", 1)
    assert (a.model, a.name, a.version) == ("churn", "champion", 1)
    assert a.updated_by == yard.principal.name
    assert start <= a.updated_at <= datetime.now(UTC) + timedelta(seconds=5)
    assert yard.version("churn@champion").version == 1

    b = yard.set_alias("churn", "champion", 3)
    assert b.updated_at >= a.updated_at
    assert yard.version("churn@champion").version == 3
    assert yard.version("churn:1").aliases == ()
    assert yard.version("churn:3").aliases == ("champion",)
    yard.set_alias("churn", "challenger", 2)
    assert yard.model("churn").aliases == {"champion": 3, "challenger": 2}
    by_version = {v.version: v.aliases for v in yard.versions("churn")}
    assert by_version == {1: (), 2: ("challenger",), 3: ("champion",)}

    yard.remove_alias("churn", "challenger")
    assert yard.model("churn").aliases == {"champion": 3}
    with pytest.raises(AliasNotFound):
        yard.version("churn@challenger")

    assert history(yard, "churn") == [
        ("champion", None, 1),
        ("champion", 1, 3),
        ("challenger", None, 2),
        ("challenger", 2, None),
    ]
    events = yard.registry.alias_history(yard.principal, "churn")
    assert {e["actor"] for e in events} == {yard.principal.name}
    times = [datetime.fromisoformat(e["at"]) for e in events]
    assert times == sorted(times)
    assert all(start <= t for t in times)


def test_alias_names_are_checked(yard: Yard, onnx_file: Path) -> None:
    register(yard, "churn", onnx_file)
    for bad in ("3", "bad alias", "", "-x"):
        with pytest.raises(ValidationFailed):
            yard.set_alias("churn", bad, 1)
    assert yard.model("churn").aliases == {}
    assert history(yard, "churn") == []


def test_alias_moves_are_atomic_under_concurrency(yard: Yard, onnx_file: Path) -> None:
    for _ in range(3):
        register(yard, "churn", onnx_file)
    failures: list[BaseException] = []

    def mover(seed: int) -> None:
        try:
            for i in range(4):
                yard.set_alias("churn", "champion", (seed + i) % 3 + 1)
        except BaseException as exc:
            failures.append(exc)

    threads = [threading.Thread(target=mover, args=(s,)) for s in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert failures == []
    events = history(yard, "churn")
    assert len(events) == 24
    assert events[0][1] is None
    # Every move starts where the previous one ended: no move read a stale alias.
    for prev, cur in itertools.pairwise(events):
        assert cur[1] == prev[2]
    assert yard.version("churn@champion").version == events[-1][2]


def test_alias_to_archived_version_is_refused(yard: Yard, onnx_file: Path) -> None:
    register(yard, "churn", onnx_file)
    register(yard, "churn", onnx_file)
    archived = yard.archive("churn", 1)
    assert archived.status == "archived"
    with pytest.raises(VersionArchived) as info:
        yard.set_alias("churn", "champion", 1)
    assert info.value.status == 409
    assert yard.model("churn").aliases == {}
    assert history(yard, "churn") == []


# -- archive ------------------------------------------------------------------------------


def test_archive_is_refused_while_an_alias_holds_the_version(yard: Yard,
                                                             onnx_file: Path) -> None:
    register(yard, "churn", onnx_file)
    register(yard, "churn", onnx_file)
    yard.set_alias("churn", "champion", 2)
    with pytest.raises(InUse) as info:
        yard.archive("churn", 2)
    assert info.value.status == 409 and "champion" in info.value.detail
    assert yard.version("churn:2").status == "active"
    yard.set_alias("churn", "champion", 1)
    assert yard.archive("churn", 2).status == "archived"
    # The latest *active* version is what the bare name resolves to now.
    assert yard.version("churn").version == 1
    assert yard.version("churn:2").status == "archived"
    assert [v.status for v in yard.versions("churn")] == ["active", "archived"]


def test_archive_is_refused_while_a_pinned_endpoint_serves_it(yard: Yard,
                                                             onnx_file: Path) -> None:
    register(yard, "churn", onnx_file)
    register(yard, "churn", onnx_file)
    yard.create_endpoint("churn-api", "churn:1")
    with pytest.raises(InUse) as info:
        yard.archive("churn", 1)
    assert info.value.status == 409 and "churn-api" in info.value.detail
    assert yard.version("churn:1").status == "active"
    yard.update_endpoint("churn-api", model="churn:2")
    assert yard.archive("churn", 1).status == "archived"
    # An endpoint cannot be pinned to an archived version.
    with pytest.raises(VersionArchived):
        yard.create_endpoint("old-api", "churn:1")
    with pytest.raises(VersionArchived):
        yard.update_endpoint("churn-api", model="churn:1")


def test_when_every_version_is_archived_the_bare_name_has_none(yard: Yard,
                                                               onnx_file: Path) -> None:
    register(yard, "churn", onnx_file)
    yard.archive("churn", 1)
    with pytest.raises(VersionNotFound):
        yard.version("churn")


# -- delete -------------------------------------------------------------------------------


@pytest.mark.parametrize("ref", ["churn", "churn:1", "churn@champion"])
def test_delete_model_is_refused_while_an_endpoint_uses_it(yard: Yard, onnx_file: Path,
                                                           ref: str) -> None:
    v = yard.register("churn", path=onnx_file)
    yard.set_alias("churn", "champion", 1)
    yard.create_endpoint("churn-api", ref)
    with pytest.raises(InUse) as info:
        yard.delete_model("churn")
    assert info.value.status == 409 and "churn-api" in info.value.detail
    assert yard.version("churn:1").version == 1

    yard.delete_endpoint("churn-api")
    yard.delete_model("churn")
    with pytest.raises(ModelNotFound):
        yard.model("churn")
    assert yard.models() == []
    # The blob stays, unreferenced, until garbage collection.
    assert yard.registry.unreferenced_artifacts() == [v.artifact_digest]
    # The name is free again and numbering restarts; the old alias history is gone.
    assert register(yard, "churn", onnx_file) == 1
    assert history(yard, "churn") == []
    assert yard.model("churn").aliases == {}


def test_delete_model_works_after_the_endpoint_moves_away(yard: Yard,
                                                         onnx_file: Path) -> None:
    register(yard, "churn", onnx_file)
    register(yard, "fraud", onnx_file)
    yard.create_endpoint("api", "churn")
    yard.update_endpoint("api", model="fraud:1")
    yard.delete_model("churn")
    assert [m.name for m in yard.models()] == ["fraud"]


def test_delete_model_removes_versions_tags_and_aliases(yard: Yard, onnx_file: Path) -> None:
    register(yard, "churn", onnx_file, tags={"team": "risk"})
    register(yard, "keep", onnx_file, tags={"team": "risk"})
    yard.set_alias("churn", "champion", 1)
    yard.delete_model("churn")
    assert [(v.model, v.version) for v in yard.search({"team": "risk"})] == [("keep", 1)]
    with pytest.raises(ModelNotFound):
        yard.versions("churn")


# -- search -------------------------------------------------------------------------------


def test_search_by_tags(yard: Yard, onnx_file: Path) -> None:
    register(yard, "churn", onnx_file, tags={"team": "risk", "stage": "dev"})
    register(yard, "churn", onnx_file, tags={"team": "risk", "stage": "prod"})
    register(yard, "fraud", onnx_file, tags={"team": "risk", "stage": "prod"})
    register(yard, "ads", onnx_file, tags={"team": "growth", "stage": "prod"})

    def found(tags: dict[str, str]) -> list[str]:
        return [v.ref for v in yard.search(tags)]

    assert found({"team": "risk"}) == ["churn:1", "churn:2", "fraud:1"]
    assert found({"team": "risk", "stage": "prod"}) == ["churn:2", "fraud:1"]
    assert found({"stage": "prod"}) == ["ads:1", "churn:2", "fraud:1"]
    assert found({"team": "nobody"}) == []
    assert found({"stage": "Prod"}) == []  # values match exactly
    assert [v.lineage.tags for v in yard.search({"team": "growth"})] == [
        {"team": "growth", "stage": "prod"}
    ]

    def models(tags: dict[str, str] | None) -> list[str]:
        return [m.name for m in yard.models(tags=tags)]

    assert models({"team": "risk"}) == ["churn", "fraud"]
    assert models({"stage": "dev"}) == ["churn"]
    assert models({"team": "risk", "stage": "dev"}) == ["churn"]
    assert models({"team": "growth", "stage": "dev"}) == []
    assert models(None) == ["ads", "churn", "fraud"]


# -- not found ----------------------------------------------------------------------------


def test_unknown_names_raise_404s(yard: Yard, onnx_file: Path) -> None:
    register(yard, "churn", onnx_file)
    cases: list[tuple[type[NotFound], Callable[[], object]]] = [
        (ModelNotFound, lambda: yard.model("nope")),
        (ModelNotFound, lambda: yard.version("nope")),
        (ModelNotFound, lambda: yard.version("nope:1")),
        (ModelNotFound, lambda: yard.version("nope@champion")),
        (ModelNotFound, lambda: yard.versions("nope")),
        (ModelNotFound, lambda: yard.set_alias("nope", "champion", 1)),
        (ModelNotFound, lambda: yard.archive("nope", 1)),
        (ModelNotFound, lambda: yard.delete_model("nope")),
        (ModelNotFound, lambda: yard.registry.alias_history(yard.principal, "nope")),
        (VersionNotFound, lambda: yard.version("churn:9")),
        (VersionNotFound, lambda: yard.set_alias("churn", "champion", 9)),
        (VersionNotFound, lambda: yard.archive("churn", 9)),
        (AliasNotFound, lambda: yard.version("churn@champion")),
        (AliasNotFound, lambda: yard.remove_alias("churn", "champion")),
        (ModelNotFound, lambda: yard.create_endpoint("api", "nope")),
        (VersionNotFound, lambda: yard.create_endpoint("api", "churn:9")),
        (AliasNotFound, lambda: yard.create_endpoint("api", "churn@x")),
    ]
    for cls, call in cases:
        with pytest.raises(cls) as info:
            call()
        assert info.value.status == 404, cls
        assert info.value.to_problem()["code"] == cls.code
    assert yard.list_endpoints() == []


# -- crash between artifact write and metadata commit -------------------------------------


def test_crash_before_commit_leaves_no_version(yard: Yard, onnx_file: Path,
                                              tmp_path: Path) -> None:
    folder = tmp_path / "expected"
    folder.mkdir()
    (folder / onnx_file.name).write_bytes(onnx_file.read_bytes())
    _, expected_digest, _ = pack_to_file(folder, tmp_path)

    def crash() -> None:
        raise RuntimeError("power cut")

    yard.registry.before_commit = crash
    with pytest.raises(RuntimeError, match="power cut"):
        yard.register("churn", path=onnx_file, tags={"team": "risk"})
    assert yard.models() == []
    with pytest.raises(ModelNotFound):
        yard.version("churn")
    assert yard.search({"team": "risk"}) == []
    assert yard.registry.unreferenced_artifacts() == [expected_digest]

    yard.registry.before_commit = lambda: None
    v = yard.register("churn", path=onnx_file)
    assert v.version == 1
    assert v.artifact_digest == expected_digest
    assert list(yard.artifacts.digests()) == [expected_digest]
    assert yard.registry.unreferenced_artifacts() == []


def test_crash_on_a_later_version_keeps_earlier_ones(yard: Yard, onnx_file: Path,
                                                    classifier: Any, tabular: Tabular) -> None:
    register(yard, "churn", onnx_file)
    yard.set_alias("churn", "champion", 1)

    def crash() -> None:
        raise RuntimeError("power cut")

    yard.registry.before_commit = crash
    with pytest.raises(RuntimeError):
        yard.register("churn", classifier, sample=tabular[0][:3])
    yard.registry.before_commit = lambda: None
    assert [v.version for v in yard.versions("churn")] == [1]
    assert yard.version("churn@champion").version == 1
    assert len(yard.registry.unreferenced_artifacts()) == 1
    assert register(yard, "churn", onnx_file) == 2


# -- concurrent registrations -------------------------------------------------------------


def race(yard: Yard, monkeypatch: pytest.MonkeyPatch, first: Callable[[], int],
         second: Callable[[], int]) -> tuple[list[int], list[BaseException]]:
    """Run ``first`` until it is about to commit, then start ``second`` and let ``first``
    commit only once ``second`` has entered its own metadata transaction."""
    in_commit = threading.Event()
    second_entered = threading.Event()
    real_ensure_model = store_registry.ensure_model

    def spy_ensure_model(*args: Any, **kw: Any) -> Any:
        if threading.current_thread().name == "second":
            second_entered.set()
        return real_ensure_model(*args, **kw)

    def hold() -> None:
        if threading.current_thread().name == "first":
            in_commit.set()
            assert second_entered.wait(30)
            time.sleep(0.3)  # let the second transaction reach the database and block

    real_project_of = store_registry.project_of

    def spy_project_of(*args: Any, **kw: Any) -> Any:  # the first query of a registration
        if threading.current_thread().name == "second":
            second_entered.set()
        return real_project_of(*args, **kw)

    monkeypatch.setattr(store_registry, "ensure_model", spy_ensure_model)
    monkeypatch.setattr(store_registry, "project_of", spy_project_of)
    yard.registry.before_commit = hold
    results: list[int] = []
    failures: list[BaseException] = []

    def run(fn: Callable[[], int]) -> None:
        try:
            results.append(fn())
        except BaseException as exc:
            failures.append(exc)

    t1 = threading.Thread(target=run, args=(first,), name="first")
    t2 = threading.Thread(target=run, args=(second,), name="second")
    t1.start()
    assert in_commit.wait(30)
    t2.start()
    t1.join(60)
    t2.join(60)
    return sorted(results), failures


def test_concurrent_registrations_of_an_existing_model(yard: Yard, onnx_file: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    register(yard, "churn", onnx_file)
    results, failures = race(yard, monkeypatch, lambda: register(yard, "churn", onnx_file),
                             lambda: register(yard, "churn", onnx_file))
    assert failures == []
    assert results == [2, 3]


def test_concurrent_first_registrations_of_a_new_model(
    yard: Yard, onnx_file: Path, monkeypatch: pytest.MonkeyPatch, database_url: str,
    request: pytest.FixtureRequest,
) -> None:
    results, failures = race(yard, monkeypatch, lambda: register(yard, "fresh", onnx_file),
                             lambda: register(yard, "fresh", onnx_file))
    assert failures == []
    assert results == [1, 2]


def test_concurrent_creation_of_the_same_endpoint(
    yard: Yard, onnx_file: Path, monkeypatch: pytest.MonkeyPatch, database_url: str,
    request: pytest.FixtureRequest,
) -> None:
    register(yard, "churn", onnx_file)
    second_entered = threading.Event()
    first_created = threading.Event()
    real_resolve = store_registry.resolve
    real_create = store_endpoints.create

    def spy_resolve(*args: Any, **kw: Any) -> Any:
        if threading.current_thread().name == "second":
            second_entered.set()
        return real_resolve(*args, **kw)

    def slow_create(*args: Any, **kw: Any) -> Any:
        created = real_create(*args, **kw)
        if threading.current_thread().name == "first":
            first_created.set()
            assert second_entered.wait(30)
            time.sleep(0.3)  # the second transaction reaches the database and blocks
        return created

    real_project_of = store_registry.project_of

    def spy_project_of(*args: Any, **kw: Any) -> Any:  # the first query of a create
        if threading.current_thread().name == "second":
            second_entered.set()
        return real_project_of(*args, **kw)

    monkeypatch.setattr(store_registry, "resolve", spy_resolve)
    monkeypatch.setattr(store_registry, "project_of", spy_project_of)
    monkeypatch.setattr(store_endpoints, "create", slow_create)
    outcomes: dict[str, object] = {}

    def run() -> None:
        try:
            outcomes[threading.current_thread().name] = yard.create_endpoint("api", "churn")
        except BaseException as exc:
            outcomes[threading.current_thread().name] = exc

    t1 = threading.Thread(target=run, name="first")
    t2 = threading.Thread(target=run, name="second")
    t1.start()
    assert first_created.wait(30)
    t2.start()
    t1.join(60)
    t2.join(60)
    assert not isinstance(outcomes["first"], BaseException)
    assert isinstance(outcomes["second"], AlreadyExists), outcomes["second"]
    assert [e.name for e in yard.list_endpoints()] == ["api"]


def test_registering_a_folder_that_contains_the_yard(yard: Yard, onnx_file: Path) -> None:
    project = yard.settings.home.parent
    (project / "model.onnx").write_bytes(onnx_file.read_bytes())
    try:
        v = yard.register("churn", path=project)
    except (InvalidArtifact, ValidationFailed):
        return  # refusing is fine
    stored = yard.artifacts.materialize(v.artifact_digest)
    files = sorted(p.relative_to(stored).as_posix() for p in stored.rglob("*") if p.is_file())
    assert files == ["model.onnx"]
