"""Reading a backup archive: its manifest, every member checked against it, the rows decoded.

Members are read by name through ``extractfile``; nothing is extracted by a path the archive
chose, so a crafted member name cannot write anywhere.
"""

from __future__ import annotations

import gzip
import hashlib
import tarfile
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

import orjson

from modelyard.store.archive import CHUNK
from modelyard.store.backup.errors import BackupInvalid
from modelyard.store.backup.manifest import MANIFEST, Manifest, Table
from modelyard.store.backup.progress import Progress
from modelyard.store.backup.rows import RowCodec

_MAX_MANIFEST = 64 << 20


class Archive:
    def __init__(self, tar: tarfile.TarFile) -> None:
        self.tar = tar
        members = tar.getmembers()
        self._members = {m.name: m for m in members}
        if len(self._members) != len(members):
            raise BackupInvalid("the archive holds a member twice")
        odd = [m.name for m in members if not m.isfile()]
        if odd:
            raise BackupInvalid(f"the archive holds entries that are not files: {odd[:5]}")
        info = self._members.get(MANIFEST)
        if info is None:
            raise BackupInvalid(f"the archive has no {MANIFEST}: it is not a Modelyard "
                                "backup, or its writing was cut short")
        if info.size > _MAX_MANIFEST:
            raise BackupInvalid(f"{MANIFEST} is {info.size} bytes, too large to be one")
        self.manifest = Manifest.parse(self.open(MANIFEST).read())
        present = set(self._members) - {MANIFEST}
        if present != set(self.manifest.members):
            odd = sorted(present.symmetric_difference(self.manifest.members))
            raise BackupInvalid(f"the archive's members do not match its manifest: {odd[:5]}")

    def open(self, name: str) -> IO[bytes]:
        handle = self.tar.extractfile(self._members[name])
        if handle is None:  # pragma: no cover - only files get here
            raise BackupInvalid(f"member {name} cannot be read", field=name)
        return handle

    def verify(self, progress: Progress) -> None:
        """Every member's size and sha256 against the manifest, before anything is used."""
        expected = self.manifest.members
        advance = progress.task("checking the archive (bytes)",
                                sum(m.size for m in expected.values()))
        for name, member in expected.items():
            if self._members[name].size != member.size:
                raise BackupInvalid(f"member {name} is {self._members[name].size} bytes, the "
                                    f"manifest says {member.size}: the archive is damaged",
                                    field=name)
            hasher = hashlib.sha256()
            with self.open(name) as fh:
                while chunk := fh.read(CHUNK):
                    hasher.update(chunk)
                    advance(len(chunk))
            if hasher.hexdigest() != member.sha256:
                raise BackupInvalid(f"member {name} fails its sha256 check: the archive is "
                                    "damaged", field=name)

    def rows(self, table: Table) -> Iterator[dict[str, Any]]:
        """The table's rows as column -> value, decoded for binding."""
        names = [c.name for c in table.columns]
        codec = RowCodec([c.kind for c in table.columns])
        line_no = 0
        try:
            with gzip.open(self.open(table.member)) as lines:
                for line in lines:
                    line_no += 1
                    values = orjson.loads(line)
                    if not isinstance(values, list):
                        raise ValueError("a row must be a JSON array")
                    yield dict(zip(names, codec.decode(values), strict=True))
        except (ValueError, OSError, EOFError, zlib.error) as exc:
            raise BackupInvalid(f"{table.member} line {line_no}: {exc}",
                                field=f"{table.member}:{line_no}") from None


@contextmanager
def open_archive(path: Path) -> Iterator[Archive]:
    if not path.is_file():
        raise BackupInvalid(f"{path} does not exist or is not a file", field="archive")
    try:
        with tarfile.open(path, "r:*") as tar:
            yield Archive(tar)
    except (tarfile.TarError, EOFError, zlib.error) as exc:
        raise BackupInvalid(f"{path} is not a readable backup archive: {exc}",
                            field="archive") from None
