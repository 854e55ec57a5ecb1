"""The node-local artifact cache (filled once per node, verified by sha256, checked on every
use) and uploads that fail half-way, on a local folder and on S3 (moto's server)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from modelyard.domain.errors import ArtifactCorrupted
from modelyard.store.archive import pack_to_file
from modelyard.store.artifacts import META, ArtifactStore
from s3_support import S3Place

# Large enough that a download takes a while (a window for two loaders to overlap).
BIG = np.random.default_rng(0).bytes(8 << 20)
FILES = {"model.bin": BIG, "conf/settings.json": b'{"threshold": 0.5}'}


@pytest.fixture(params=["local", "s3"])
def place(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[str, dict[str, Any]]:
    """Where artifacts are stored: (url, storage options)."""
    if request.param == "s3":
        s3: S3Place = request.getfixturevalue("s3")
        return s3.url, s3.options
    return str(tmp_path / "store"), {}


@pytest.fixture
def stored(place: tuple[str, dict[str, Any]], tmp_path: Path) -> tuple[ArtifactStore, str]:
    """A store holding one artifact, and its digest (nothing cached yet)."""
    folder = tmp_path / "model"
    for rel, data in FILES.items():
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        (folder / rel).write_bytes(data)
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    archive, digest, _ = pack_to_file(folder, scratch)
    url, options = place
    store = ArtifactStore(url, tmp_path / "cache", **options)
    store.put_file(archive, digest)
    return store, digest


def loader(store: ArtifactStore) -> ArtifactStore:
    """Another loader on the same node: its own store object, the same cache folder."""
    return ArtifactStore(store.url, store.cache_dir, **store.fs.storage_options)


def contents(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes()
            for p in folder.rglob("*") if p.is_file()}


def test_parallel_loaders_on_one_node_download_once(stored: tuple[ArtifactStore, str]
                                                    ) -> None:
    store, digest = stored
    loaders = [loader(store) for _ in range(6)]
    start = threading.Barrier(len(loaders))
    folders: list[Path] = []

    def load(one: ArtifactStore) -> None:
        start.wait()
        folders.append(one.materialize(digest))

    threads = [threading.Thread(target=load, args=(one,)) for one in loaders]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert len(folders) == len(loaders) and len(set(folders)) == 1
    assert sum(one.fetches for one in loaders) == 1  # one download; the others waited
    assert contents(folders[0]) == FILES


_LOAD = """
import json, sys, time
from pathlib import Path
from modelyard.store.artifacts import ArtifactStore
url, cache, digest, options, at = sys.argv[1:]
store = ArtifactStore(url, Path(cache), **json.loads(options))
time.sleep(max(0.0, float(at) - time.time()))
store.materialize(digest)
print(store.fetches)
"""


def test_two_processes_on_one_node_download_once(stored: tuple[ArtifactStore, str]) -> None:
    store, digest = stored
    at = time.time() + 3.0  # both start loading at the same moment, after their imports
    env = {k: v for k, v in os.environ.items() if not k.startswith("MODELYARD_")}
    procs = [subprocess.Popen(
        [sys.executable, "-c", _LOAD, store.url, str(store.cache_dir), digest,
         json.dumps(store.fs.storage_options), str(at)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        for _ in range(2)]
    try:
        outputs = [p.communicate(timeout=120) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    assert all(p.returncode == 0 for p in procs), outputs
    assert sorted(int(out.strip()) for out, _ in outputs) == [0, 1]
    assert contents(store.cache_dir / digest) == FILES


def _truncate(folder: Path) -> None:
    path = folder / "model.bin"
    path.write_bytes(path.read_bytes()[:-1])


def _remove(folder: Path) -> None:
    (folder / "conf" / "settings.json").unlink()


def _add(folder: Path) -> None:
    (folder / "stray.txt").write_text("left behind")


@pytest.mark.parametrize("damage", [_truncate, _remove, _add], ids=["truncated", "removed",
                                                                    "added"])
def test_a_damaged_cache_entry_is_detected_and_fetched_again(
        stored: tuple[ArtifactStore, str], damage: Any) -> None:
    store, digest = stored
    folder = store.materialize(digest)
    assert store.materialize(digest) == folder and store.fetches == 1  # a hit
    damage(folder)
    assert store.materialize(digest) == folder
    assert store.fetches == 2  # detected by the marker check, fetched again
    assert contents(folder) == FILES


@pytest.mark.parametrize("marker", [None, "{not json", '{"sha256": "%s", "files": 2}',
                                    '{"sha256": "%s", "files": 2, "bytes": 1}'])
def test_a_missing_or_wrong_marker_means_fetch_again(stored: tuple[ArtifactStore, str],
                                                     marker: str | None) -> None:
    """A folder without its marker (e.g. a fill interrupted after the rename) or with one
    that does not describe it is not trusted."""
    store, digest = stored
    folder = store.materialize(digest)
    path = store.cache_dir / META / f"{digest}.json"
    if marker is None:
        path.unlink()
    else:
        path.write_text(marker.replace("%s", digest))
    assert store.materialize(digest) == folder and store.fetches == 2
    assert contents(folder) == FILES
    assert json.loads(path.read_text()) == {"sha256": digest, "files": 2,
                                            "bytes": sum(len(v) for v in FILES.values())}


def test_same_size_damage_is_found_by_a_deep_check(stored: tuple[ArtifactStore, str]
                                                   ) -> None:
    """The per-use check is by size; ``deep=True`` re-hashes (the cost is the model's size)."""
    store, digest = stored
    folder = store.materialize(digest)
    path = folder / "model.bin"
    data = bytearray(path.read_bytes())
    data[12345] ^= 0xFF
    path.write_bytes(bytes(data))
    assert store.materialize(digest) == folder and store.fetches == 1  # not seen by size
    assert store.materialize(digest, deep=True) == folder and store.fetches == 2
    assert contents(folder) == FILES


def test_a_fill_that_fails_leaves_no_usable_entry(stored: tuple[ArtifactStore, str]) -> None:
    store, digest = stored
    key = f"{store.root}/sha256/{digest[:2]}/{digest}.tar"
    good = bytes(store.fs.cat_file(key))
    store.fs.pipe_file(key, good[: len(good) // 2])
    with pytest.raises(ArtifactCorrupted):
        store.materialize(digest)
    assert not (store.cache_dir / digest).exists()
    assert not (store.cache_dir / META / f"{digest}.json").exists()
    store.fs.pipe_file(key, good)  # repaired: the next use fills it
    assert contents(store.materialize(digest)) == FILES


def test_an_upload_that_fails_half_way_leaves_no_visible_artifact(
        stored: tuple[ArtifactStore, str], tmp_path: Path) -> None:
    """The store's own upload path against a backend that breaks mid-transfer: it wrote
    half the bytes to the temporary key, then the connection went."""
    store, _ = stored
    folder = tmp_path / "other"
    folder.mkdir()
    (folder / "w.bin").write_bytes(os.urandom(1 << 20))
    archive, digest, _ = pack_to_file(folder, tmp_path / "scratch")
    real_put = store.fs.put_file

    def half_then_fail(lpath: str, rpath: str, **kwargs: Any) -> None:
        store.fs.pipe_file(rpath, Path(lpath).read_bytes()[: 1 << 19])
        raise ConnectionError("connection reset during upload")

    store.fs.put_file = half_then_fail
    try:
        with pytest.raises(ConnectionError):
            store.put_file(archive, digest)
    finally:
        store.fs.put_file = real_put
    assert not store.exists(digest)
    assert digest not in set(store.digests())
    assert store.fs.glob(f"{store.root}/tmp/*") == []  # the partial temp object is gone

    def short_write(lpath: str, rpath: str, **kwargs: Any) -> None:
        store.fs.pipe_file(rpath, Path(lpath).read_bytes()[:-100])  # "succeeds", short

    store.fs.put_file = short_write
    try:
        with pytest.raises(ArtifactCorrupted):
            store.put_file(archive, digest)
    finally:
        store.fs.put_file = real_put
    assert not store.exists(digest)
    assert store.fs.glob(f"{store.root}/tmp/*") == []
    store.put_file(archive, digest)  # and a good upload then works
    assert store.exists(digest) and store.size(digest) == archive.stat().st_size
