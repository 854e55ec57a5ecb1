"""Content-addressed artifact storage over any fsspec URL (a local folder by default, S3 at
scale), with a node-local cache of extracted, hash-verified model folders.

Writes go to a temporary key, are checked there (size) and only then copied to their
content address, so a reader never sees a partial artifact: a failed or interrupted upload
leaves at most a ``tmp/`` object, never an entry under ``sha256/``. On S3 each object
appears whole or not at all, and the copy is server-side. An artifact written whose
registration later failed is an unreferenced blob: it breaks nothing (the same content reuses
it) and ``garbage`` lists it for removal.

The node-local cache (``cache_dir``) holds one folder per sha256, filled once per node:
downloaded under a per-digest file lock (two processes loading the same model on one node
download it once; the second finds it filled), verified against the digest while it
streams, extracted to a temporary folder and renamed into place, and only then marked with
``.meta/DIGEST.json`` (files and bytes). A use checks the folder against that marker (a
stat per file, no hashing); a folder that does not match, or has no marker, is fetched
again. ``materialize(deep=True)`` re-hashes the whole folder instead.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import fsspec
from fsspec.implementations.local import LocalFileSystem

from modelyard.domain.errors import (
    ArtifactCorrupted,
    ArtifactNotFound,
    InvalidArtifact,
    ValidationFailed,
)
from modelyard.store.archive import CHUNK, extract, folder_digest, sha256_file

try:  # POSIX; elsewhere two processes may both fill the cache (the result is the same)
    import fcntl
except ImportError:  # pragma: no cover
    fcntl = None  # type: ignore[assignment]

_DIGEST = re.compile(r"[0-9a-f]{64}")  # used with fullmatch
DEFAULT_MAX_EXTRACTED = 8 << 30
META = ".meta"  # in cache_dir: DIGEST.json markers and DIGEST.lock files


def check_digest(digest: str, field: str = "sha256") -> str:
    if not isinstance(digest, str) or not _DIGEST.fullmatch(digest):
        raise ValidationFailed(f"{digest!r} is not a sha256 hex digest", field=field)
    return digest


class ArtifactStore:
    def __init__(self, url: str, cache_dir: Path, **storage_options: Any) -> None:
        self.url = url
        if url.startswith(("s3://", "s3a://")):
            # Other processes write the same bucket: listings cached here would go stale.
            storage_options.setdefault("use_listings_cache", False)
        self.fs, root = fsspec.core.url_to_fs(url, **storage_options)
        self.root = root.rstrip("/")
        self.cache_dir = cache_dir
        self.fetches = 0  # artifacts downloaded into the cache by this object
        self.fs.makedirs(self.root, exist_ok=True)

    def __repr__(self) -> str:
        return f"ArtifactStore({self.url!r})"

    def _key(self, digest: str) -> str:
        return f"{self.root}/sha256/{digest[:2]}/{digest}.tar"

    def exists(self, digest: str) -> bool:
        return bool(self.fs.exists(self._key(check_digest(digest))))

    def put_file(self, path: Path, digest: str) -> None:
        """Store a local archive whose sha256 the caller computed (checked again here)."""
        check_digest(digest)
        if sha256_file(path) != digest:
            raise ArtifactCorrupted("local archive changed while it was being stored")
        key = self._key(digest)
        if self.fs.exists(key):
            return
        tmp = f"{self.root}/tmp/{uuid.uuid4().hex}.part"
        self.fs.makedirs(f"{self.root}/tmp", exist_ok=True)
        self.fs.makedirs(key.rsplit("/", 1)[0], exist_ok=True)
        try:
            self.fs.put_file(str(path), tmp)
            if isinstance(self.fs, LocalFileSystem):
                _fsync_path(tmp)
            written = int(self.fs.size(tmp))
            if written != path.stat().st_size:
                raise ArtifactCorrupted(f"upload of {digest} stored {written} of "
                                        f"{path.stat().st_size} bytes")
            self.fs.mv(tmp, key)  # local: rename; S3: server-side copy, then delete
        except BaseException:
            with suppress(Exception):  # an upload that failed leaves nothing visible
                self.fs.rm(tmp)
            raise

    def open(self, digest: str) -> Any:
        key = self._key(check_digest(digest))
        try:
            return self.fs.open(key, "rb")
        except FileNotFoundError:
            raise ArtifactNotFound(f"artifact {digest} is not in the store") from None

    def stream(self, digest: str) -> Iterator[bytes]:
        with self.open(digest) as fh:
            while chunk := fh.read(CHUNK):
                yield chunk

    def size(self, digest: str) -> int:
        try:
            return int(self.fs.size(self._key(check_digest(digest))))
        except FileNotFoundError:
            raise ArtifactNotFound(f"artifact {digest} is not in the store") from None

    def materialize(self, digest: str, *, deep: bool = False) -> Path:
        """A local folder with the artifact's files, filled once per node and verified by
        sha256 when filled; each use checks it against its marker (``deep``: re-hashes it).
        A cached folder that no longer matches is fetched again."""
        folder = self.cache_dir / check_digest(digest)
        if self._cached(digest, deep):
            return folder
        with self._fill_lock(digest):
            if self._cached(digest, deep):  # another process filled it meanwhile
                return folder
            self._fill(digest)
        return folder

    def _marker(self, digest: str) -> Path:
        return self.cache_dir / META / f"{digest}.json"

    def _cached(self, digest: str, deep: bool) -> bool:
        folder = self.cache_dir / digest
        try:
            marker = json.loads(self._marker(digest).read_text())
            if marker.get("sha256") != digest or not folder.is_dir():
                return False
            if deep:
                return folder_digest(folder) == digest
            return _census(folder) == (marker.get("files"), marker.get("bytes"))
        except (OSError, ValueError, InvalidArtifact):  # missing, unreadable, tampered
            return False

    @contextmanager
    def _fill_lock(self, digest: str) -> Iterator[None]:
        (self.cache_dir / META).mkdir(parents=True, exist_ok=True)
        with open(self.cache_dir / META / f"{digest}.lock", "a+b") as handle:
            if fcntl is not None:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                if fcntl is not None:
                    fcntl.flock(handle.fileno(), fcntl.LOCK_UN)

    def _fill(self, digest: str) -> None:
        """Download, verify, extract and rename into place; the marker last (holding the
        digest's lock)."""
        folder = self.cache_dir / digest
        self._marker(digest).unlink(missing_ok=True)
        shutil.rmtree(folder, ignore_errors=True)
        fd, tmp_name = tempfile.mkstemp(suffix=".tar", dir=self.cache_dir / META)
        tmp_dir = Path(tempfile.mkdtemp(prefix=".extract-", dir=self.cache_dir / META))
        try:
            hasher = hashlib.sha256()
            with os.fdopen(fd, "wb") as out, self.open(digest) as src:
                while chunk := src.read(CHUNK):
                    hasher.update(chunk)
                    out.write(chunk)
            self.fetches += 1
            if hasher.hexdigest() != digest:
                raise ArtifactCorrupted(
                    f"artifact {digest} failed its sha256 check; the store copy is damaged"
                )
            extract(Path(tmp_name), tmp_dir, max_bytes=DEFAULT_MAX_EXTRACTED)
            files, size = _census(tmp_dir)
            try:
                tmp_dir.rename(folder)
            except OSError:  # without file locks, another process may have won: same files
                if not folder.is_dir():
                    raise
            marker = self._marker(digest)
            staged = marker.with_suffix(".json.part")
            staged.write_text(json.dumps({"sha256": digest, "files": files, "bytes": size}))
            _fsync_path(str(staged))
            staged.replace(marker)
        finally:
            Path(tmp_name).unlink(missing_ok=True)
            shutil.rmtree(tmp_dir, ignore_errors=True)

    def age_s(self, digest: str) -> float | None:
        """Seconds since the blob was written, where the store says (local, S3)."""
        import time
        from datetime import datetime

        try:
            info = self.fs.info(self._key(check_digest(digest)))
        except FileNotFoundError:
            return None
        stamp = info.get("mtime") or info.get("LastModified") or info.get("created")
        if isinstance(stamp, datetime):
            stamp = stamp.timestamp()
        return time.time() - float(stamp) if stamp is not None else None

    def digests(self) -> Iterator[str]:
        for path in self.fs.glob(f"{self.root}/sha256/*/*.tar"):
            name = str(path).rsplit("/", 1)[-1][:-4]
            if _DIGEST.fullmatch(name):
                yield name

    def delete(self, digest: str) -> None:
        self.fs.rm(self._key(check_digest(digest)))
        self._marker(digest).unlink(missing_ok=True)
        shutil.rmtree(self.cache_dir / digest, ignore_errors=True)


def storage_options(text: str) -> dict[str, Any]:
    """The ``artifacts_options`` setting (a JSON object) as fsspec storage options."""
    if not text.strip():
        return {}
    try:
        options = json.loads(text)
    except ValueError as exc:
        raise ValidationFailed(f"artifacts_options is not JSON: {exc}",
                               field="artifacts_options") from None
    if not isinstance(options, dict):
        raise ValidationFailed("artifacts_options must be a JSON object",
                               field="artifacts_options")
    return options


def _census(folder: Path) -> tuple[int, int]:
    """Entries under ``folder`` (files, and links an uploaded archive may hold) and their
    total size, by ``lstat`` alone."""
    files = size = 0
    stack = [folder]
    while stack:
        with os.scandir(stack.pop()) as entries:
            for entry in entries:
                if entry.is_dir(follow_symlinks=False):
                    stack.append(Path(entry.path))
                else:
                    files += 1
                    size += entry.stat(follow_symlinks=False).st_size
    return files, size


def _fsync_path(path: str) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
