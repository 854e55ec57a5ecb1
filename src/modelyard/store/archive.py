"""Model folders as canonical tar archives, and safe extraction of archives from outside.

The canonical form (sorted entries, regular files only, zeroed owners and times) makes the
sha256 of an archive a content address: the same files always give the same digest.
Extraction refuses absolute paths, ``..``, links that leave the folder, devices, and archives
that expand past a size limit, and it never leaves a half-extracted folder behind.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
import tarfile
import tempfile
import zipfile
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import BinaryIO

from modelyard.domain.errors import InvalidArtifact

CHUNK = 1 << 20


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _walk(folder: Path) -> Iterator[tuple[str, Path]]:
    """Every regular file under ``folder`` by relative posix name, links resolved in place."""
    root = folder.resolve()
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=False):
        dirnames.sort()
        for name in sorted(filenames + [d for d in dirnames if Path(dirpath, d).is_symlink()]):
            path = Path(dirpath, name)
            rel = path.relative_to(folder).as_posix()
            if path.is_symlink():
                target = path.resolve()
                if target != root and root not in target.parents:
                    raise InvalidArtifact(f"symlink {rel!r} points outside the model folder")
                if target.is_dir():
                    raise InvalidArtifact(f"symlink {rel!r} points to a folder; copy it instead")
                path = target
            if not path.is_file():
                raise InvalidArtifact(f"{rel!r} is not a regular file")
            yield rel, path


def stage(source: Path, dest: Path, *, exclude: Path | None = None) -> None:
    """Copy a model file or folder into the empty folder ``dest`` (links resolved).

    ``exclude`` (the yard's own folder) must not lie inside a staged folder: registering '.'
    next to ./.yard would otherwise copy the yard, its keys included, into the artifact.
    """
    if not source.exists():
        raise InvalidArtifact(f"{source} does not exist")
    if source.is_dir():
        root = source.resolve()
        for inner, what in ((dest, "the staging folder"), (exclude, "the yard")):
            if inner is not None and (inner.resolve() == root or
                                      root in inner.resolve().parents):
                raise InvalidArtifact(
                    f"{source} contains {what} ({inner}); put the model files in a folder "
                    "of their own", field="path")
    if source.is_file():
        shutil.copyfile(source, dest / source.name)
        return
    for rel, path in _walk(source):
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, target)


def pack(folder: Path, out: BinaryIO) -> None:
    """Write the canonical tar of ``folder`` to ``out``."""
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for rel, path in _walk(folder):
            info = tarfile.TarInfo(rel)
            info.size = path.stat().st_size
            info.mode = 0o644
            info.mtime = 0
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            with open(path, "rb") as fh:
                tar.addfile(info, fh)


class _HashingWriter:
    """A write-only file object that only hashes what is written."""

    def __init__(self) -> None:
        self.hasher = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> int:
        self.hasher.update(data)
        self.size += len(data)
        return len(data)

    def tell(self) -> int:
        return self.size


def folder_digest(folder: Path) -> str:
    """The sha256 the canonical tar of ``folder`` would have, without writing it."""
    writer = _HashingWriter()
    pack(folder, writer)  # type: ignore[arg-type]
    return writer.hasher.hexdigest()


def pack_to_file(folder: Path, directory: Path) -> tuple[Path, str, int]:
    """Pack into a new file in ``directory``; return its path, sha256 and size."""
    fd, name = tempfile.mkstemp(suffix=".tar", dir=directory)
    with os.fdopen(fd, "wb") as fh:
        pack(folder, fh)
    path = Path(name)
    return path, sha256_file(path), path.stat().st_size


def _check_member_name(name: str) -> str:
    posix = PurePosixPath(name.replace("\\", "/"))
    if posix.is_absolute() or name.startswith(("/", "\\")) or (
        len(name) > 1 and name[1] == ":"
    ):
        raise InvalidArtifact(f"archive member {name!r} has an absolute path")
    if ".." in posix.parts:
        raise InvalidArtifact(f"archive member {name!r} climbs out of the folder with '..'")
    return posix.as_posix()


def _link_stays_inside(member: str, target: str) -> bool:
    if target.startswith("/"):
        return False
    parts: list[str] = []
    for part in (PurePosixPath(member).parent / target).parts:
        if part == "..":
            if not parts:
                return False
            parts.pop()
        elif part != ".":
            parts.append(part)
    return True


def extract(archive: Path, dest: Path, *, max_bytes: int) -> None:
    """Extract a tar (any compression) or zip archive into the empty folder ``dest``.

    Raises InvalidArtifact, after removing whatever was written, if anything is unsafe.
    """
    try:
        # Tar first: a tar whose last member is a zip (skops files are) looks like a zip too.
        if tarfile.is_tarfile(archive):
            _extract_tar(archive, dest, max_bytes)
        elif zipfile.is_zipfile(archive):
            _extract_zip(archive, dest, max_bytes)
        else:
            raise InvalidArtifact("the artifact is neither a tar nor a zip archive")
    except InvalidArtifact:
        _empty(dest)
        raise
    except (tarfile.TarError, zipfile.BadZipFile, OSError, EOFError) as exc:
        _empty(dest)
        raise InvalidArtifact(f"the archive is damaged: {exc}") from exc


def _extract_tar(archive: Path, dest: Path, max_bytes: int) -> None:
    with tarfile.open(archive, mode="r:*") as tar:
        members = tar.getmembers()
        total = 0
        for m in members:
            _check_member_name(m.name)
            if m.issym() or m.islnk():
                if not _link_stays_inside(m.name, m.linkname):
                    raise InvalidArtifact(
                        f"link {m.name!r} -> {m.linkname!r} points outside the folder"
                    )
            elif not (m.isfile() or m.isdir()):
                raise InvalidArtifact(f"archive member {m.name!r} is not a file or folder")
            total += max(m.size, 0)
            if total > max_bytes:
                raise InvalidArtifact(f"the archive expands past {max_bytes} bytes")
        # The stdlib "data" filter re-checks all of the above as a second line of defence.
        tar.extractall(dest, members=members, filter="data")


def _extract_zip(archive: Path, dest: Path, max_bytes: int) -> None:
    with zipfile.ZipFile(archive) as zf:
        infos = zf.infolist()
        total = 0
        for info in infos:
            _check_member_name(info.filename)
            if stat.S_ISLNK(info.external_attr >> 16):
                raise InvalidArtifact(f"zip member {info.filename!r} is a symlink")
            total += info.file_size
            if total > max_bytes:
                raise InvalidArtifact(f"the archive expands past {max_bytes} bytes")
        root = dest.resolve()
        for info in infos:
            target = (dest / _check_member_name(info.filename)).resolve()
            if root not in target.parents:
                raise InvalidArtifact(f"zip member {info.filename!r} escapes the folder")
            if info.is_dir():
                target.mkdir(parents=True, exist_ok=True)
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            with zf.open(info) as src, open(target, "wb") as out:
                written = 0
                while chunk := src.read(CHUNK):
                    written += len(chunk)
                    if written > info.file_size:  # header lies about the size
                        raise InvalidArtifact(f"zip member {info.filename!r} is larger than "
                                              "its header says")
                    out.write(chunk)


def _empty(folder: Path) -> None:
    for child in folder.iterdir() if folder.exists() else []:
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child, ignore_errors=True)
        else:
            child.unlink(missing_ok=True)
