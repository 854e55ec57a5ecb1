"""Model folders as canonical tar archives, and safe extraction of archives from outside.

The canonical form (sorted entries, regular files only, zeroed owners and times) makes the
sha256 of an archive a content address: the same files always give the same digest.
Extraction refuses absolute paths, ``..``, links that leave the folder, devices, archives
that expand past a size limit or past a compression ratio (bombs), and archives with too many
members, and it never leaves a half-extracted folder behind.
"""

from __future__ import annotations

import bz2
import gzip
import hashlib
import lzma
import os
import posixpath
import shutil
import stat
import struct
import tarfile
import tempfile
import zipfile
import zlib
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import IO, BinaryIO, cast

from modelyard.domain.errors import InvalidArtifact

CHUNK = 1 << 20
DEFAULT_MAX_RATIO = 200
"""Expanded bytes per archive byte. Model weights compress a few times at most; deflate of
zeros reaches ~1000, so anything past this is a bomb rather than a model."""
DEFAULT_MAX_MEMBERS = 100_000
"""Each member costs memory to list and a file to create; millions of tiny ones are an attack."""
_TAR_META_READ = 1 << 20
"""Largest single read while listing a tar: only pax and GNU long-name headers read more
than one 512-byte block, and tarfile holds them in memory whole."""
_TAR_HEADER_ALLOWANCE = 16 << 10
"""Decompressed bytes per tar member beyond its data: header, pax header, padding."""


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


def extract(archive: Path, dest: Path, *, max_bytes: int,
            max_ratio: float = DEFAULT_MAX_RATIO,
            max_members: int = DEFAULT_MAX_MEMBERS) -> None:
    """Extract a tar (any compression) or zip archive into the empty folder ``dest``.

    Refused: more than ``max_bytes`` once expanded, more than ``max_ratio`` expanded bytes per
    byte of the archive file, more than ``max_members`` entries, or anything unsafe. Raises
    InvalidArtifact, after removing whatever was written.
    """
    try:
        limits = _Limits(max_bytes, max_ratio, max_members, max(archive.stat().st_size, 1))
        # Tar first: a tar whose last member is a zip (skops files are) looks like a zip too.
        if not _extract_tar(archive, dest, limits):
            if zipfile.is_zipfile(archive):
                _extract_zip(archive, dest, limits)
            else:
                raise InvalidArtifact("the artifact is neither a tar nor a zip archive")
    except InvalidArtifact:
        _empty(dest)
        raise
    except (tarfile.TarError, zipfile.BadZipFile, OSError, EOFError, zlib.error,
            lzma.LZMAError) as exc:
        _empty(dest)
        raise InvalidArtifact(f"the archive is damaged: {exc}") from exc


class _Limits:
    """The caps of one extraction, checked as members are counted."""

    def __init__(self, max_bytes: int, max_ratio: float, max_members: int,
                 archive_size: int) -> None:
        self.max_bytes = max_bytes
        self.max_ratio = max_ratio
        self.max_members = max_members
        self.archive_size = archive_size

    @property
    def expanded_cap(self) -> int:
        """The most bytes that can pass both the size and the ratio cap."""
        return min(self.max_bytes, int(self.max_ratio * self.archive_size))

    def check_count(self, count: int) -> None:
        if count > self.max_members:
            raise InvalidArtifact(f"the archive has more than {self.max_members} members")

    def check_total(self, total: int, note: str = "") -> None:
        if total > self.max_bytes:
            raise InvalidArtifact(f"the archive expands past {self.max_bytes} bytes{note}")
        ratio = total / self.archive_size
        if ratio > self.max_ratio:
            raise InvalidArtifact(
                f"the archive expands {ratio:.0f} times its size ({total} bytes from "
                f"{self.archive_size}){note}; the limit is {self.max_ratio:g} times: "
                "a compression bomb, not a model")


class _BoundedStream:
    """A read-only view of a (decompressed) tar stream that refuses to go past ``limit``.

    Member sizes bound what tarfile writes, but not what it decompresses: pax and GNU
    long-name headers are read into memory whole and never show up as member sizes. Refusing
    big single reads while listing (``max_read``) and any read or seek past ``limit`` bounds
    both the memory and the CPU a crafted archive can take.
    """

    def __init__(self, raw: IO[bytes], limit: int, max_read: int | None) -> None:
        self.raw = raw
        self.limit = limit
        self.max_read = max_read

    def read(self, size: int | None = -1) -> bytes:
        pos = self.raw.tell()
        allowed = self.limit - pos
        if size is None or size < 0:
            size = allowed + 1
        if self.max_read is not None and size > self.max_read:
            raise InvalidArtifact(f"a tar header block of {size} bytes is larger than "
                                  f"{self.max_read}")
        data = self.raw.read(min(size, allowed + 1))
        if len(data) > allowed:
            raise self._past_limit()
        return data

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        if whence not in (os.SEEK_SET, os.SEEK_CUR):
            raise OSError("only absolute and relative seeks are supported")
        target = self.raw.tell() + offset if whence == os.SEEK_CUR else offset
        if target > self.limit:
            raise self._past_limit()
        return self.raw.seek(target)

    def tell(self) -> int:
        return self.raw.tell()

    def _past_limit(self) -> InvalidArtifact:
        return InvalidArtifact(f"the decompressed archive runs past {self.limit} bytes, more "
                               "than its members account for")


def _decompressed(archive: Path) -> IO[bytes]:
    """``archive`` opened through the decompressor its magic bytes name (as tarfile's r:*)."""
    with open(archive, "rb") as fh:
        magic = fh.read(6)
    if magic.startswith(b"\x1f\x8b"):
        return cast(IO[bytes], gzip.open(archive, "rb"))
    if magic.startswith(b"BZh"):
        return cast(IO[bytes], bz2.open(archive, "rb"))
    if magic.startswith(b"\xfd7zXZ\x00"):
        return cast(IO[bytes], lzma.open(archive, "rb"))
    return open(archive, "rb")


def _extract_tar(archive: Path, dest: Path, limits: _Limits) -> bool:
    """Extract if ``archive`` is a tar; False (nothing written) if it is not one."""
    with _decompressed(archive) as raw:
        stream = _BoundedStream(raw, limits.expanded_cap + _TAR_HEADER_ALLOWANCE,
                                _TAR_META_READ)
        try:
            tar = tarfile.TarFile(fileobj=stream, mode="r")  # type: ignore[arg-type]
        except (tarfile.ReadError, OSError, EOFError, zlib.error, lzma.LZMAError):
            return False
        with tar:
            members = []
            total = 0
            for m in tar:  # lazily: each header is checked before the next is decompressed
                members.append(m)
                limits.check_count(len(members))
                stream.limit = limits.expanded_cap + _TAR_HEADER_ALLOWANCE * (len(members) + 1)
                _check_member_name(m.name)
                if m.issym() or m.islnk():
                    if not _link_stays_inside(m.name, m.linkname):
                        raise InvalidArtifact(
                            f"link {m.name!r} -> {m.linkname!r} points outside the folder"
                        )
                elif not (m.isfile() or m.isdir()):
                    raise InvalidArtifact(f"archive member {m.name!r} is not a file or folder")
                # tarfile writes exactly m.size bytes for a file (sparse ones: the expanded
                # size), failing on short data and never writing more: sizes bound the disk.
                total += max(m.size, 0)
                limits.check_total(total)
            # Where it cannot link, tarfile copies the target instead: count links as copies.
            limits.check_total(total + _linked_bytes(members),
                               " (links counted as copies of their targets)")
            stream.max_read = None
            # The stdlib "data" filter re-checks all of the above as a second line of defence.
            tar.extractall(dest, members=members, filter="data")
    return True


def _linked_bytes(members: list[tarfile.TarInfo]) -> int:
    """Bytes tarfile would write if every link became a copy of the file it names."""
    by_name = {posixpath.normpath(m.name): m for m in members}  # the last one wins, as in tar
    total = 0
    for m in members:
        target: tarfile.TarInfo | None = m
        for _ in range(40):  # a chain of links; a loop ends here as a dangling link
            if target is None or not (target.issym() or target.islnk()):
                break
            name = (posixpath.join(posixpath.dirname(target.name), target.linkname)
                    if target.issym() else target.linkname)
            target = by_name.get(posixpath.normpath(name))
        if target is not m and target is not None and target.isfile():
            total += max(target.size, 0)
    return total


def _zip_entry_count(archive: Path) -> int | None:
    """The entry count the end-of-central-directory record declares, read before zipfile
    builds an object per entry; None where the record cannot be found."""
    with open(archive, "rb") as fh:
        size = fh.seek(0, os.SEEK_END)
        fh.seek(max(size - (22 + 0xFFFF), 0))
        tail = fh.read()
    at = tail.rfind(b"PK\x05\x06")
    if at < 0 or at + 22 > len(tail):
        return None
    count: int = struct.unpack_from("<H", tail, at + 10)[0]
    if count != 0xFFFF:
        return count
    zip64 = at - 20 - 56  # the zip64 record sits just before its 20-byte locator
    if zip64 < 0 or tail[zip64:zip64 + 4] != b"PK\x06\x06":
        return None
    count64: int = struct.unpack_from("<Q", tail, zip64 + 32)[0]
    return count64


def _extract_zip(archive: Path, dest: Path, limits: _Limits) -> None:
    declared = _zip_entry_count(archive)
    if declared is not None:
        limits.check_count(declared)
    with zipfile.ZipFile(archive) as zf:
        infos = zf.infolist()
        limits.check_count(len(infos))
        total = 0
        for info in infos:
            _check_member_name(info.filename)
            if stat.S_ISLNK(info.external_attr >> 16):
                raise InvalidArtifact(f"zip member {info.filename!r} is a symlink")
            total += info.file_size
            limits.check_total(total)
        root = dest.resolve()
        for info in infos:
            target = (dest / _check_member_name(info.filename)).resolve()
            if root not in target.parents:
                raise InvalidArtifact(f"zip member {info.filename!r} escapes the folder")
            if info.is_dir():
                target.mkdir(parents=True, exist_ok=True)
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            # zipfile stops at the header's file_size (then fails the CRC), so a lying header
            # cannot write more than was counted; the check below keeps that true regardless.
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
