"""Compression bombs and member floods: refused by ratio, member count and stream size."""

from __future__ import annotations

import io
import os
import struct
import tarfile
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from modelyard.domain.errors import InvalidArtifact
from modelyard.store.archive import (
    DEFAULT_MAX_MEMBERS,
    DEFAULT_MAX_RATIO,
    _zip_entry_count,
    extract,
)

MiB = 1 << 20
ROOMY = 1 << 30  # a size cap far above every archive here: the other caps must do the work


class Zeros(io.RawIOBase):
    """``size`` zero bytes, produced as read: a 50 MB member without a 50 MB buffer."""

    def __init__(self, size: int) -> None:
        self.left = size

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        n = min(len(buffer), self.left)
        buffer[:n] = bytes(n)
        self.left -= n
        return n


def zeros_tar_gz(path: Path, size: int) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        info = tarfile.TarInfo("weights.bin")
        info.size = size
        tar.addfile(info, Zeros(size))
    return path


def zeros_zip(path: Path, size: int) -> Path:
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf, \
            zf.open("weights.bin", "w") as out:
        for _ in range(size // MiB):
            out.write(bytes(MiB))
    return path


def refused(archive: Path, dest: Path, *, max_bytes: int = ROOMY,
            max_ratio: float = DEFAULT_MAX_RATIO,
            max_members: int = DEFAULT_MAX_MEMBERS) -> str:
    """Extract expecting a refusal; dest must be left empty. Returns the message."""
    dest.mkdir(exist_ok=True)
    with pytest.raises(InvalidArtifact) as info:
        extract(archive, dest, max_bytes=max_bytes, max_ratio=max_ratio,
                max_members=max_members)
    assert list(dest.iterdir()) == []
    return info.value.detail


def extracted(archive: Path, dest: Path, *, max_bytes: int = ROOMY,
              max_ratio: float = DEFAULT_MAX_RATIO,
              max_members: int = DEFAULT_MAX_MEMBERS) -> dict[str, int]:
    dest.mkdir(exist_ok=True)
    extract(archive, dest, max_bytes=max_bytes, max_ratio=max_ratio, max_members=max_members)
    return {p.relative_to(dest).as_posix(): p.stat().st_size
            for p in dest.rglob("*") if p.is_file()}


# -- ratio --------------------------------------------------------------------------------


def test_gzip_tar_of_50mb_zeros_is_refused_by_ratio(tmp_path: Path) -> None:
    archive = zeros_tar_gz(tmp_path / "bomb.tar.gz", 50 * MiB)
    assert archive.stat().st_size < 100_000
    detail = refused(archive, tmp_path / "dest")
    assert "times its size" in detail and f"limit is {DEFAULT_MAX_RATIO}" in detail


def test_a_realistic_compressed_tar_passes(tmp_path: Path) -> None:
    weights = os.urandom(300_000)  # floats barely compress
    config = b'{"layers": [64, 64, 10], "activation": "relu"}\n' * 2000  # text compresses well
    archive = tmp_path / "model.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        for name, data in (("weights.bin", weights), ("config.json", config)):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    assert extracted(archive, tmp_path / "dest") == {"weights.bin": len(weights),
                                                     "config.json": len(config)}


def test_the_ratio_cap_can_be_raised(tmp_path: Path) -> None:
    archive = zeros_tar_gz(tmp_path / "sparse.tar.gz", 4 * MiB)
    refused(archive, tmp_path / "dest")
    assert extracted(archive, tmp_path / "dest", max_ratio=10_000) == {"weights.bin": 4 * MiB}


def test_size_cap_still_speaks_first(tmp_path: Path) -> None:
    """Past both caps, the message names the size limit callers already report."""
    archive = zeros_tar_gz(tmp_path / "bomb.tar.gz", 4 * MiB)
    assert "expands past 1048576 bytes" in refused(archive, tmp_path / "dest", max_bytes=MiB)


def test_zip_of_zeros_is_refused_by_ratio(tmp_path: Path) -> None:
    archive = zeros_zip(tmp_path / "bomb.zip", 20 * MiB)
    detail = refused(archive, tmp_path / "dest")
    assert "times its size" in detail


def test_zip_whose_header_lies_about_its_size_is_refused(tmp_path: Path) -> None:
    """The header says 1000 bytes (a harmless ratio); the data inflates to 8 MiB."""
    archive = zeros_zip(tmp_path / "liar.zip", 8 * MiB)
    data = bytearray(archive.read_bytes())
    with zipfile.ZipFile(archive) as zf:
        info = zf.getinfo("weights.bin")
    assert data[info.header_offset:info.header_offset + 4] == b"PK\x03\x04"
    struct.pack_into("<I", data, info.header_offset + 22, 1000)  # local header
    central = data.rfind(b"PK\x01\x02")
    struct.pack_into("<I", data, central + 24, 1000)  # central directory
    archive.write_bytes(bytes(data))
    with zipfile.ZipFile(archive) as zf:
        assert zf.getinfo("weights.bin").file_size == 1000
    refused(archive, tmp_path / "dest")


# -- member count -------------------------------------------------------------------------


def many_tar(path: Path, count: int) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for i in range(count):
            info = tarfile.TarInfo(f"f{i}.txt")
            info.size = 1
            tar.addfile(info, io.BytesIO(b"x"))
    return path


def many_zip(path: Path, count: int) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for i in range(count):
            zf.writestr(f"f{i}.txt", b"x")
    return path


@pytest.mark.parametrize("build", [many_tar, many_zip])
def test_too_many_members_are_refused(tmp_path: Path,
                                      build: Callable[[Path, int], Path]) -> None:
    archive = build(tmp_path / "many", 11)
    assert "more than 10 members" in refused(archive, tmp_path / "dest", max_members=10)
    assert len(extracted(archive, tmp_path / "ok", max_members=11)) == 11


def test_zip64_member_count_is_read_before_listing(tmp_path: Path) -> None:
    """Past 65535 entries the count lives in the zip64 record; it is read from there."""
    archive = many_zip(tmp_path / "flood.zip", 0x10000 + 5)
    assert _zip_entry_count(archive) == 0x10000 + 5
    assert "more than 65536 members" in refused(archive, tmp_path / "dest",
                                                max_members=0x10000)


# -- what tarfile really reads and writes -------------------------------------------------


def test_a_huge_pax_header_is_refused_before_it_is_read(tmp_path: Path) -> None:
    """Pax headers are read into memory whole and never counted as a member's size."""
    archive = tmp_path / "pax.tar.gz"
    with tarfile.open(archive, "w:gz", format=tarfile.PAX_FORMAT) as tar:
        info = tarfile.TarInfo("model.onnx")
        info.pax_headers = {"comment": "x" * (8 * MiB)}
        info.size = 4
        tar.addfile(info, io.BytesIO(b"onnx"))
    assert "header block" in refused(archive, tmp_path / "dest")


def test_a_stream_longer_than_its_members_is_refused(tmp_path: Path) -> None:
    """Many mid-sized headers, each under the single-read cap, still cannot add up."""
    archive = tmp_path / "headers.tar.gz"
    with tarfile.open(archive, "w:gz", format=tarfile.PAX_FORMAT) as tar:
        for i in range(24):
            info = tarfile.TarInfo(f"f{i}.txt")
            info.pax_headers = {"comment": "x" * 900_000}
            tar.addfile(info, io.BytesIO(b""))
    assert "runs past" in refused(archive, tmp_path / "dest")


def test_links_count_as_copies_of_their_targets(tmp_path: Path) -> None:
    """tarfile copies a link's target where it cannot link, so each link may cost its size."""
    archive = tmp_path / "links.tar"
    data = os.urandom(400_000)
    with tarfile.open(archive, "w") as tar:
        info = tarfile.TarInfo("weights.bin")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
        for name, kind in (("hard.bin", tarfile.LNKTYPE), ("soft.bin", tarfile.SYMTYPE)):
            link = tarfile.TarInfo(name)
            link.type = kind
            link.linkname = "weights.bin"
            tar.addfile(link)
    assert "links counted as copies" in refused(archive, tmp_path / "dest", max_bytes=MiB)
    got = extracted(archive, tmp_path / "ok", max_bytes=2 * MiB)
    assert got == {"weights.bin": len(data), "hard.bin": len(data), "soft.bin": len(data)}


def test_a_compressed_tar_shorter_than_its_headers_is_refused(tmp_path: Path) -> None:
    """tarfile writes exactly a member's size or fails: a short stream never passes."""
    archive = tmp_path / "short.tar.gz"
    data = os.urandom(200_000)
    with tarfile.open(archive, "w:gz") as tar:
        for name in ("a.bin", "b.bin"):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    archive.write_bytes(archive.read_bytes()[:250_000])
    refused(archive, tmp_path / "dest")


def test_uncompressed_canonical_tars_are_untouched_by_the_ratio(tmp_path: Path) -> None:
    """A plain tar never expands: zeros in a canonical artifact stay extractable."""
    archive = tmp_path / "plain.tar"
    with tarfile.open(archive, "w") as tar:
        info = tarfile.TarInfo("zeros.bin")
        info.size = 2 * MiB
        tar.addfile(info, Zeros(2 * MiB))
    assert extracted(archive, tmp_path / "dest") == {"zeros.bin": 2 * MiB}
