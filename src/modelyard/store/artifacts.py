"""Content-addressed artifact storage over any fsspec URL (a local folder by default, S3 at
scale), with a node-local cache of extracted, hash-verified model folders.

Writes go to a temporary key and are then moved into place, so a reader never sees a partial
artifact. An artifact written whose registration later failed is an unreferenced blob: it
breaks nothing (the same content reuses it) and ``garbage`` lists it for removal.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import tempfile
import uuid
from collections.abc import Iterator
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

_DIGEST = re.compile(r"[0-9a-f]{64}")  # used with fullmatch
DEFAULT_MAX_EXTRACTED = 8 << 30


def check_digest(digest: str, field: str = "sha256") -> str:
    if not isinstance(digest, str) or not _DIGEST.fullmatch(digest):
        raise ValidationFailed(f"{digest!r} is not a sha256 hex digest", field=field)
    return digest


class ArtifactStore:
    def __init__(self, url: str, cache_dir: Path, **storage_options: Any) -> None:
        self.url = url
        self.fs, root = fsspec.core.url_to_fs(url, **storage_options)
        self.root = root.rstrip("/")
        self.cache_dir = cache_dir
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
        self.fs.put_file(str(path), tmp)
        if isinstance(self.fs, LocalFileSystem):
            _fsync_path(tmp)
        self.fs.mv(tmp, key)

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

    def materialize(self, digest: str) -> Path:
        """A local folder with the artifact's files, verified against the digest every time
        (a cached folder that no longer matches is fetched again)."""
        folder = self.cache_dir / check_digest(digest)
        if folder.is_dir():
            try:
                if folder_digest(folder) == digest:
                    return folder
            except InvalidArtifact:  # e.g. a link or special file appeared in the cache
                pass
            shutil.rmtree(folder, ignore_errors=True)
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(suffix=".tar", dir=self.cache_dir)
        tmp_dir = Path(tempfile.mkdtemp(prefix=".extract-", dir=self.cache_dir))
        try:
            hasher = hashlib.sha256()
            with os.fdopen(fd, "wb") as out, self.open(digest) as src:
                while chunk := src.read(CHUNK):
                    hasher.update(chunk)
                    out.write(chunk)
            if hasher.hexdigest() != digest:
                raise ArtifactCorrupted(
                    f"artifact {digest} failed its sha256 check; the store copy is damaged"
                )
            extract(Path(tmp_name), tmp_dir, max_bytes=DEFAULT_MAX_EXTRACTED)
            try:
                tmp_dir.rename(folder)
            except OSError:  # another process won the race; theirs is identical
                if not folder.is_dir():
                    raise
        finally:
            Path(tmp_name).unlink(missing_ok=True)
            shutil.rmtree(tmp_dir, ignore_errors=True)
        return folder

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
        shutil.rmtree(self.cache_dir / digest, ignore_errors=True)


def _fsync_path(path: str) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
