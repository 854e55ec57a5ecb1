"""Canonical packing and safe extraction of model archives."""

from __future__ import annotations

import io
import os
import stat
import tarfile
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest

from modelyard.domain.errors import InvalidArtifact
from modelyard.store.archive import extract, pack, pack_to_file, sha256_file, stage

MAX = 1 << 20


def make_folder(root: Path, files: dict[str, bytes]) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for rel, data in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return root


FILES = {"model.onnx": b"\x08\x07onnx-bytes", "sub/weights.bin": b"w" * 5000,
         "sub/deeper/conf.json": b"{}", "a.txt": b"alpha"}


def packed_digest(folder: Path, scratch: Path) -> str:
    scratch.mkdir(exist_ok=True)
    path, digest, size = pack_to_file(folder, scratch)
    assert size == path.stat().st_size
    assert sha256_file(path) == digest
    path.unlink()
    return digest


# -- pack ---------------------------------------------------------------------------------


def test_pack_is_deterministic_and_ignores_mtimes_and_modes(tmp_path: Path) -> None:
    folder = make_folder(tmp_path / "m", FILES)
    first = packed_digest(folder, tmp_path / "s")
    assert packed_digest(folder, tmp_path / "s") == first
    for path in folder.rglob("*"):
        if path.is_file():
            os.utime(path, (1_000_000, 1_000_000))
            path.chmod(0o600)
    assert packed_digest(folder, tmp_path / "s") == first


def test_pack_ignores_location_and_creation_order(tmp_path: Path) -> None:
    a = make_folder(tmp_path / "a", FILES)
    b = make_folder(tmp_path / "elsewhere" / "b", dict(reversed(list(FILES.items()))))
    assert packed_digest(a, tmp_path / "s") == packed_digest(b, tmp_path / "s")


def test_pack_changes_with_content_or_names(tmp_path: Path) -> None:
    base = packed_digest(make_folder(tmp_path / "a", FILES), tmp_path / "s")
    changed = packed_digest(make_folder(tmp_path / "b", {**FILES, "a.txt": b"alphA"}),
                            tmp_path / "s")
    renamed = dict(FILES)
    renamed["b.txt"] = renamed.pop("a.txt")
    moved = packed_digest(make_folder(tmp_path / "c", renamed), tmp_path / "s")
    assert len({base, changed, moved}) == 3


def test_pack_writes_canonical_members(tmp_path: Path) -> None:
    folder = make_folder(tmp_path / "m", FILES)
    buf = io.BytesIO()
    pack(folder, buf)
    buf.seek(0)
    with tarfile.open(fileobj=buf) as tar:
        members = tar.getmembers()
        assert sorted(m.name for m in members) == sorted(FILES)
        for m in members:
            assert m.isfile()
            assert (m.mtime, m.uid, m.gid, m.uname, m.gname, m.mode) == (0, 0, 0, "", "", 0o644)
            fh = tar.extractfile(m)
            assert fh is not None and fh.read() == FILES[m.name]


def test_pack_then_extract_round_trip(tmp_path: Path) -> None:
    folder = make_folder(tmp_path / "m", FILES)
    path, _, _ = pack_to_file(folder, tmp_path)
    dest = tmp_path / "out"
    dest.mkdir()
    extract(path, dest, max_bytes=MAX)
    got = {p.relative_to(dest).as_posix(): p.read_bytes() for p in dest.rglob("*") if p.is_file()}
    assert got == FILES


# -- stage --------------------------------------------------------------------------------


def test_stage_follows_a_symlink_inside_the_folder(tmp_path: Path) -> None:
    folder = make_folder(tmp_path / "m", {"real.bin": b"data"})
    (folder / "link.bin").symlink_to("real.bin")
    dest = tmp_path / "dest"
    dest.mkdir()
    stage(folder, dest)
    assert (dest / "link.bin").read_bytes() == b"data"
    assert not (dest / "link.bin").is_symlink()
    # The symlink is stored as a plain copy: same digest as the same two real files.
    twin = make_folder(tmp_path / "twin", {"real.bin": b"data", "link.bin": b"data"})
    assert packed_digest(folder, tmp_path / "s") == packed_digest(twin, tmp_path / "s")


@pytest.mark.parametrize("absolute", [True, False])
def test_stage_refuses_a_symlink_escaping_the_folder(tmp_path: Path, absolute: bool) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_bytes(b"do not copy")
    folder = make_folder(tmp_path / "m", {"model.onnx": b"x"})
    (folder / "leak").symlink_to(secret if absolute else Path("..") / "secret.txt")
    dest = tmp_path / "dest"
    dest.mkdir()
    with pytest.raises(InvalidArtifact, match="outside"):
        stage(folder, dest)
    assert not (dest / "leak").exists()
    with pytest.raises(InvalidArtifact):
        pack(folder, io.BytesIO())


def test_stage_refuses_a_symlinked_folder_outside(tmp_path: Path) -> None:
    outside = make_folder(tmp_path / "outside", {"x": b"1"})
    folder = make_folder(tmp_path / "m", {"model.onnx": b"x"})
    (folder / "dir").symlink_to(outside, target_is_directory=True)
    dest = tmp_path / "dest"
    dest.mkdir()
    with pytest.raises(InvalidArtifact):
        stage(folder, dest)


def test_stage_single_file_and_missing_source(tmp_path: Path) -> None:
    src = tmp_path / "model.onnx"
    src.write_bytes(b"onnx")
    dest = tmp_path / "dest"
    dest.mkdir()
    stage(src, dest)
    assert [p.name for p in dest.iterdir()] == ["model.onnx"]
    with pytest.raises(InvalidArtifact):
        stage(tmp_path / "missing", dest)


# -- extract: tar -------------------------------------------------------------------------


def write_tar(path: Path, members: list[tuple[tarfile.TarInfo, bytes | None]],
              mode: str = "w") -> Path:
    with tarfile.open(path, mode) as tar:
        for info, data in members:
            if data is not None:
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
            else:
                tar.addfile(info)
    return path


def file_member(name: str) -> tarfile.TarInfo:
    return tarfile.TarInfo(name)


def link_member(name: str, target: str, kind: bytes) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = target
    return info


def special_member(name: str, kind: bytes) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    return info


GOOD = (file_member("model.onnx"), b"fine")

BAD_TARS: dict[str, list[tuple[tarfile.TarInfo, bytes | None]]] = {
    "dotdot": [GOOD, (file_member("../evil.txt"), b"x")],
    "dotdot-nested": [GOOD, (file_member("sub/../../evil.txt"), b"x")],
    "absolute": [GOOD, (file_member("/tmp/evil.txt"), b"x")],
    "windows-drive": [GOOD, (file_member("C:/evil.txt"), b"x")],
    "symlink-out": [GOOD, (link_member("link", "../../etc/passwd", tarfile.SYMTYPE), None)],
    "symlink-abs": [GOOD, (link_member("link", "/etc/passwd", tarfile.SYMTYPE), None)],
    "hardlink-out": [GOOD, (link_member("hard", "../outside.txt", tarfile.LNKTYPE), None)],
    "hardlink-abs": [GOOD, (link_member("hard", "/etc/passwd", tarfile.LNKTYPE), None)],
    # Passes the first check (relative to the member's folder) but not the data filter,
    # which reads hard-link targets from the archive root: the model file is written first.
    "hardlink-out-late": [GOOD, (link_member("sub/hard", "../outside.txt", tarfile.LNKTYPE),
                                 None)],
    "chardev": [GOOD, (special_member("dev", tarfile.CHRTYPE), None)],
    "blockdev": [GOOD, (special_member("blk", tarfile.BLKTYPE), None)],
    "fifo": [GOOD, (special_member("pipe", tarfile.FIFOTYPE), None)],
    "too-big": [GOOD, (file_member("big.bin"), b"\0" * (MAX + 1))],
    "too-big-total": [(file_member(f"part{i}.bin"), b"\0" * (MAX // 3)) for i in range(4)],
}


def check_refused(archive: Path, dest: Path, max_bytes: int = MAX) -> InvalidArtifact:
    dest.mkdir(exist_ok=True)
    with pytest.raises(InvalidArtifact) as info:
        extract(archive, dest, max_bytes=max_bytes)
    assert list(dest.iterdir()) == []
    return info.value


@pytest.mark.parametrize("case", sorted(BAD_TARS))
@pytest.mark.parametrize("mode", ["w", "w:gz"])
def test_extract_refuses_unsafe_tar(tmp_path: Path, case: str, mode: str) -> None:
    (tmp_path / "outside.txt").write_bytes(b"keep")
    archive = write_tar(tmp_path / "bad.tar", BAD_TARS[case], mode)
    dest = tmp_path / "work" / "dest"
    dest.parent.mkdir()
    check_refused(archive, dest)
    assert (tmp_path / "outside.txt").read_bytes() == b"keep"
    assert not (tmp_path / "evil.txt").exists()
    assert not (tmp_path / "work" / "evil.txt").exists()
    assert sorted(p.name for p in (tmp_path / "work").iterdir()) == ["dest"]


def test_extract_tar_allows_links_inside(tmp_path: Path) -> None:
    archive = write_tar(tmp_path / "ok.tar", [
        (file_member("sub/model.onnx"), b"fine"),
        (link_member("sub/alias.onnx", "model.onnx", tarfile.SYMTYPE), None),
        (link_member("hard.onnx", "sub/model.onnx", tarfile.LNKTYPE), None),
    ])
    dest = tmp_path / "dest"
    dest.mkdir()
    extract(archive, dest, max_bytes=MAX)
    assert (dest / "sub" / "alias.onnx").read_bytes() == b"fine"
    assert (dest / "hard.onnx").read_bytes() == b"fine"


def test_extract_refuses_damaged_tar_and_cleans_up(tmp_path: Path) -> None:
    good = write_tar(tmp_path / "ok.tar", [(file_member("a.bin"), b"a" * 20000),
                                           (file_member("b.bin"), b"b" * 20000)])
    data = good.read_bytes()
    damaged = tmp_path / "damaged.tar"
    damaged.write_bytes(data[:25000])
    err = check_refused(damaged, tmp_path / "dest")
    assert "damaged" in err.detail or "tar" in err.detail


def test_extract_refuses_non_archives(tmp_path: Path) -> None:
    junk = tmp_path / "junk.bin"
    junk.write_bytes(b"this is not an archive" * 100)
    check_refused(junk, tmp_path / "dest")


def test_extract_size_limit_is_inclusive(tmp_path: Path) -> None:
    archive = write_tar(tmp_path / "ok.tar", [(file_member("a.bin"), b"\0" * 100)])
    dest = tmp_path / "dest"
    dest.mkdir()
    extract(archive, dest, max_bytes=100)
    assert (dest / "a.bin").stat().st_size == 100
    check_refused(archive, tmp_path / "dest2", max_bytes=99)


# -- extract: zip -------------------------------------------------------------------------


def write_zip(path: Path, build: Callable[[zipfile.ZipFile], None]) -> Path:
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        build(zf)
    return path


def zip_symlink(zf: zipfile.ZipFile, name: str, target: str) -> None:
    info = zipfile.ZipInfo(name)
    info.create_system = 3
    info.external_attr = (stat.S_IFLNK | 0o777) << 16
    zf.writestr(info, target)


BAD_ZIPS: dict[str, Callable[[zipfile.ZipFile], None]] = {
    "dotdot": lambda zf: (zf.writestr("ok.txt", "ok"), zf.writestr("../evil.txt", "x")),
    "dotdot-nested": lambda zf: (zf.writestr("ok.txt", "ok"),
                                 zf.writestr("a/../../evil.txt", "x")),
    "backslash-dotdot": lambda zf: (zf.writestr("ok.txt", "ok"),
                                    zf.writestr("..\\evil.txt", "x")),
    "absolute": lambda zf: (zf.writestr("ok.txt", "ok"), zf.writestr("/tmp/evil.txt", "x")),
    "symlink": lambda zf: (zf.writestr("ok.txt", "ok"), zip_symlink(zf, "link", "/etc/passwd")),
    "symlink-inside": lambda zf: (zf.writestr("ok.txt", "ok"),
                                  zip_symlink(zf, "link", "ok.txt")),
    # Highly compressible: a few KiB on disk, past the limit once expanded.
    "bomb": lambda zf: zf.writestr("bomb.bin", b"\0" * (MAX + 1)),
    "too-big-total": lambda zf: [zf.writestr(f"p{i}.bin", b"\0" * (MAX // 3))
                                 for i in range(4)],
}


@pytest.mark.parametrize("case", sorted(BAD_ZIPS))
def test_extract_refuses_unsafe_zip(tmp_path: Path, case: str) -> None:
    archive = write_zip(tmp_path / "bad.zip", BAD_ZIPS[case])
    assert archive.stat().st_size < MAX
    dest = tmp_path / "work" / "dest"
    dest.parent.mkdir()
    check_refused(archive, dest)
    assert not (tmp_path / "evil.txt").exists()
    assert sorted(p.name for p in (tmp_path / "work").iterdir()) == ["dest"]


def test_extract_zip_round_trip(tmp_path: Path) -> None:
    def build(zf: zipfile.ZipFile) -> None:
        zf.writestr("a/b.txt", "hello")
        zf.writestr("dir/", "")
        zf.writestr("c.bin", b"\x00\x01")

    archive = write_zip(tmp_path / "ok.zip", build)
    dest = tmp_path / "dest"
    dest.mkdir()
    extract(archive, dest, max_bytes=MAX)
    assert (dest / "a" / "b.txt").read_text() == "hello"
    assert (dest / "c.bin").read_bytes() == b"\x00\x01"
    assert (dest / "dir").is_dir()


def test_extract_refuses_corrupted_zip_and_cleans_up(tmp_path: Path) -> None:
    def build(zf: zipfile.ZipFile) -> None:
        zf.writestr("first.txt", "written before the damage")
        zf.writestr("second.bin", os.urandom(4096))

    archive = write_zip(tmp_path / "ok.zip", build)
    data = bytearray(archive.read_bytes())
    # Flip bytes inside the second member's compressed data: its CRC check then fails.
    with zipfile.ZipFile(archive) as zf:
        info = zf.getinfo("second.bin")
        start = info.header_offset + 30 + len(info.filename) + len(info.extra) + 100
    for i in range(start, start + 50):
        data[i] ^= 0xFF
    archive.write_bytes(bytes(data))
    check_refused(archive, tmp_path / "dest")


def test_stage_into_a_folder_inside_the_source(tmp_path: Path) -> None:
    source = make_folder(tmp_path / "project", {"model.onnx": b"x"})
    dest = source / ".yard" / "tmp" / "stage-1"
    dest.mkdir(parents=True)
    try:
        stage(source, dest)
    except InvalidArtifact:
        return
    copied = sorted(p.relative_to(dest).as_posix() for p in dest.rglob("*") if p.is_file())
    assert copied == ["model.onnx"]
