"""Content-addressed artifact storage and the verified local cache, on a local folder and
on S3 (moto's S3 server on 127.0.0.1, tests/s3_support.py)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from modelyard.domain.errors import ArtifactCorrupted, ArtifactNotFound, ValidationFailed
from modelyard.store.archive import pack_to_file
from modelyard.store.artifacts import META, ArtifactStore, check_digest
from s3_support import S3Place


def packed(tmp_path: Path, name: str, files: dict[str, bytes]) -> tuple[Path, str, int]:
    folder = tmp_path / name
    folder.mkdir()
    for rel, data in files.items():
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        (folder / rel).write_bytes(data)
    scratch = tmp_path / "scratch"
    scratch.mkdir(exist_ok=True)
    return pack_to_file(folder, scratch)


@pytest.fixture(params=["local", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> ArtifactStore:
    if request.param == "s3":
        place: S3Place = request.getfixturevalue("s3")
        return ArtifactStore(place.url, tmp_path / "cache", **place.options)
    return ArtifactStore(str(tmp_path / "store"), tmp_path / "cache")


def blob_key(store: ArtifactStore, digest: str) -> str:
    return f"{store.root}/sha256/{digest[:2]}/{digest}.tar"


def read_blob(store: ArtifactStore, digest: str) -> bytes:
    return bytes(store.fs.cat_file(blob_key(store, digest)))


def write_blob(store: ArtifactStore, digest: str, data: bytes) -> None:
    """Overwrite the stored copy behind the store's back (damage, for the tests)."""
    store.fs.pipe_file(blob_key(store, digest), data)


def cache_entries(store: ArtifactStore) -> list[str]:
    """What the cache holds besides its markers and locks."""
    return sorted(p.name for p in store.cache_dir.iterdir() if p.name != META)


FILES = {"model.onnx": b"onnx" * 100, "sub/extra.json": b'{"a": 1}'}


def test_put_file_and_materialize_round_trip(store: ArtifactStore, tmp_path: Path) -> None:
    archive, digest, size = packed(tmp_path, "m", FILES)
    assert not store.exists(digest)
    store.put_file(archive, digest)
    assert store.exists(digest)
    assert store.size(digest) == size
    assert read_blob(store, digest) == archive.read_bytes()
    folder = store.materialize(digest)
    assert folder == store.cache_dir / digest
    got = {p.relative_to(folder).as_posix(): p.read_bytes()
           for p in folder.rglob("*") if p.is_file()}
    assert got == FILES
    assert b"".join(store.stream(digest)) == archive.read_bytes()
    # Served from the cache the second time, and the cache holds no temporary files.
    assert store.materialize(digest) == folder
    assert store.fetches == 1
    assert cache_entries(store) == [digest]
    assert sorted(p.name for p in (store.cache_dir / META).iterdir()) == \
        [f"{digest}.json", f"{digest}.lock"]
    # No temporary upload is left behind.
    assert store.fs.glob(f"{store.root}/tmp/*") == []


def test_put_is_idempotent(store: ArtifactStore, tmp_path: Path) -> None:
    archive, digest, _ = packed(tmp_path, "m", FILES)
    store.put_file(archive, digest)
    before = store.fs.info(blob_key(store, digest))
    store.put_file(archive, digest)
    assert store.fs.info(blob_key(store, digest)) == before
    assert list(store.digests()) == [digest]


def test_put_refuses_a_wrong_digest(store: ArtifactStore, tmp_path: Path) -> None:
    archive, digest, _ = packed(tmp_path, "m", FILES)
    other = "0" * 64
    with pytest.raises(ArtifactCorrupted):
        store.put_file(archive, other)
    assert not store.exists(other)
    assert list(store.digests()) == []
    with pytest.raises(ValidationFailed):
        store.put_file(archive, digest.upper())


def test_digests_lists_every_stored_archive(store: ArtifactStore, tmp_path: Path) -> None:
    a, da, _ = packed(tmp_path, "a", {"x.bin": b"a"})
    b, db, _ = packed(tmp_path, "b", {"x.bin": b"b"})
    assert da != db
    store.put_file(a, da)
    store.put_file(b, db)
    assert sorted(store.digests()) == sorted([da, db])
    store.delete(da)
    assert list(store.digests()) == [db]
    assert not store.exists(da)


def test_corrupted_store_copy_is_detected(store: ArtifactStore, tmp_path: Path) -> None:
    archive, digest, _ = packed(tmp_path, "m", FILES)
    store.put_file(archive, digest)
    store.materialize(digest)
    shutil.rmtree(store.cache_dir)
    data = bytearray(read_blob(store, digest))
    data[600] ^= 0x01  # one bit inside the first member's content
    write_blob(store, digest, bytes(data))
    with pytest.raises(ArtifactCorrupted) as info:
        store.materialize(digest)
    assert info.value.status == 500
    assert not (store.cache_dir / digest).exists()
    assert cache_entries(store) == []  # no temporary file or folder left behind
    assert [p.name for p in (store.cache_dir / META).iterdir()] == [f"{digest}.lock"]


def test_truncated_store_copy_is_detected(store: ArtifactStore, tmp_path: Path) -> None:
    archive, digest, _ = packed(tmp_path, "m", FILES)
    store.put_file(archive, digest)
    write_blob(store, digest, read_blob(store, digest)[:1000])
    with pytest.raises(ArtifactCorrupted):
        store.materialize(digest)


def test_missing_artifact(store: ArtifactStore) -> None:
    digest = "ab" * 32
    with pytest.raises(ArtifactNotFound) as info:
        store.materialize(digest)
    assert info.value.status == 404
    with pytest.raises(ArtifactNotFound):
        store.size(digest)
    with pytest.raises(ArtifactNotFound):
        list(store.stream(digest))


@pytest.mark.parametrize("bad", ["", "abc", "g" * 64, "A" * 64, "a" * 63, "../" + "a" * 61,
                                 None, 64])
def test_check_digest_refuses_non_sha256(bad: str) -> None:
    with pytest.raises(ValidationFailed):
        check_digest(bad)


def test_check_digest_refuses_trailing_newline() -> None:
    with pytest.raises(ValidationFailed):
        check_digest("a" * 64 + "\n")


def test_check_digest_accepts_lowercase_hex() -> None:
    assert check_digest("0123456789abcdef" * 4) == "0123456789abcdef" * 4
