"""The streaming ZIP writer: valid archives (CRCs verify), exact predicted size, bounded memory,
ZIP64 records where 32-bit fields overflow."""

from __future__ import annotations

import os
import tracemalloc
import zipfile
import zlib
from pathlib import Path

import pytest
import zipstream.ng

from proxy.media.zipstream import ZipChangedError, ZipEntry, plan_zip

MiB = 1 << 20


def random_file(path: Path, size: int) -> Path:
    """A file of incompressible bytes, written in pieces (never held whole)."""
    with path.open("wb") as f:
        left = size
        while left:
            piece = min(left, 4 * MiB)
            f.write(os.urandom(piece))
            left -= piece
    return path


def crc_of(path: Path) -> int:
    crc = 0
    with path.open("rb") as f:
        while chunk := f.read(MiB):
            crc = zlib.crc32(chunk, crc)
    return crc


async def write_archive(plan, dest: Path) -> list[int]:
    sizes = []
    with dest.open("wb") as out:
        async for chunk in plan.stream():
            sizes.append(len(chunk))
            out.write(chunk)
    return sizes


async def test_large_files_stream_in_bounded_chunks_and_memory(tmp_path):
    files = [
        random_file(tmp_path / f"v{i}.mp4", size)
        for i, size in enumerate((24 * MiB, 1, 0, 17 * MiB + 3))
    ]
    entries = [ZipEntry(f"job_{i}_{p.stem}.mp4", p) for i, p in enumerate(files)]
    plan = await plan_zip(entries, chunk_bytes=256 * 1024)

    dest = tmp_path / "out.zip"
    tracemalloc.start()
    try:
        sizes = await write_archive(plan, dest)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    total = sum(p.stat().st_size for p in files)
    assert len(sizes) > total // (256 * 1024), "the archive must arrive in many chunks"
    assert max(sizes) <= 256 * 1024 + 4096  # a data chunk, or the (small) central directory
    assert peak < 4 * MiB, f"peak traced memory {peak} bytes: the archive was buffered"
    assert sum(sizes) == plan.size == dest.stat().st_size

    with zipfile.ZipFile(dest) as archive:
        assert archive.testzip() is None  # every CRC verifies
        infos = archive.infolist()
        assert [i.filename for i in infos] == [e.name for e in entries]
        for info, path in zip(infos, files, strict=True):
            assert info.compress_type == zipfile.ZIP_STORED
            assert info.file_size == path.stat().st_size
            assert info.CRC == crc_of(path)
            assert info.flag_bits & 0x08  # sizes and CRC follow the data
        with archive.open(infos[0]) as got, files[0].open("rb") as want:
            while chunk := want.read(MiB):
                assert got.read(len(chunk)) == chunk


async def test_zip64_fields_where_32_bits_overflow(tmp_path, monkeypatch):
    """With the limit lowered, big entries and late offsets use ZIP64 fields, the archive
    ends with ZIP64 records, and zipfile still reads and verifies everything."""
    # zipstream-ng reads its module-level limit both when sizing and when writing.
    monkeypatch.setattr(zipstream.ng, "ZIP64_LIMIT", 4096)
    files = [random_file(tmp_path / f"f{i}.bin", size) for i, size in enumerate((5000, 10, 7000))]
    entries = [ZipEntry(p.name, p) for p in files]
    plan = await plan_zip(entries, chunk_bytes=1024)
    dest = tmp_path / "z64.zip"
    await write_archive(plan, dest)
    assert plan.size == dest.stat().st_size
    data = dest.read_bytes()
    assert b"PK\x06\x06" in data and b"PK\x06\x07" in data  # ZIP64 end record and locator
    # Where each local header really is: 30 fixed bytes, then the name's first occurrence.
    local_headers = [data.index(p.name.encode()) - 30 for p in files]
    assert all(data[at : at + 4] == b"PK\x03\x04" for at in local_headers)
    with zipfile.ZipFile(dest) as archive:
        assert archive.testzip() is None
        assert [archive.read(p.name) == p.read_bytes() for p in files] == [True] * 3
        assert [i.header_offset for i in archive.infolist()][1:] == local_headers[1:]


async def test_small_archive_without_zip64(tmp_path):
    path = tmp_path / "a.mp4"
    path.write_bytes(b"hello")
    plan = await plan_zip([ZipEntry("ünïcode name.mp4", path)])
    dest = tmp_path / "small.zip"
    await write_archive(plan, dest)
    data = dest.read_bytes()
    assert b"PK\x06\x06" not in data
    with zipfile.ZipFile(dest) as archive:
        assert archive.read("ünïcode name.mp4") == b"hello"


async def test_a_file_that_changes_size_aborts_the_stream(tmp_path):
    path = random_file(tmp_path / "grow.bin", 3000)
    plan = await plan_zip([ZipEntry("grow.bin", path)], chunk_bytes=1000)
    with path.open("ab") as f:
        f.write(b"more")
    with pytest.raises(ZipChangedError, match="changed size"):
        async for _ in plan.stream():
            pass


async def test_duplicate_names_are_refused(tmp_path):
    path = tmp_path / "x"
    path.write_bytes(b"x")
    with pytest.raises(ValueError, match="duplicate"):
        await plan_zip([ZipEntry("a", path), ZipEntry("a", path)])
