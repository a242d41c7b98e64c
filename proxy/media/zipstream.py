"""A ZIP archive written while it is sent: stored entries (videos do not compress), read
chunk by chunk from disk, never built whole in memory or on disk.

    plan = await plan_zip([ZipEntry("job_0_<id>.mp4", path), ...])
    StreamingResponse(plan.stream(), headers={"Content-Length": str(plan.size)})

Each file's CRC-32 is computed as it streams, so every entry has a data descriptor (flag bit
3) after its data. Sizes come from the files themselves before anything is sent, so the whole
layout, and therefore the exact archive size, is known up front: the response carries a
Content-Length and clients can show progress. ZIP64 records are written exactly where the
classic 32-bit fields overflow (an entry or an offset of 4 GiB or more, 65535+ entries).
"""

from __future__ import annotations

import asyncio
import struct
import time
import zlib
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import anyio

CHUNK_BYTES = 1 << 20
ZIP64_LIMIT = 0xFFFFFFFF
MAX_ENTRIES = 0xFFFF

_LOCAL = struct.Struct("<IHHHHHIIIHH")
_CENTRAL = struct.Struct("<IHHHHHHIIIHHHHHII")
_END = struct.Struct("<IHHHHIIH")
_END64 = struct.Struct("<IQHHIIQQQQ")
_LOCATOR64 = struct.Struct("<IIQI")
_DESCRIPTOR = struct.Struct("<IIII")
_DESCRIPTOR64 = struct.Struct("<IIQQ")

_FLAGS = 0x0008 | 0x0800  # sizes and CRC in a data descriptor; UTF-8 names
_MADE_BY_UNIX = 3 << 8
_FILE_MODE = 0o100644 << 16


class ZipChangedError(OSError):
    """A file changed size between planning the archive and sending it."""


@dataclass(frozen=True)
class ZipEntry:
    name: str  # the name inside the archive
    path: Path


@dataclass(frozen=True)
class _Planned:
    name: bytes
    path: Path
    size: int
    dos_time: int
    dos_date: int
    offset: int
    zip64: bool  # this entry's size needs ZIP64 fields


def _dos_datetime(mtime: float) -> tuple[int, int]:
    t = time.localtime(mtime)
    year = max(t.tm_year, 1980)
    dos_time = (t.tm_hour << 11) | (t.tm_min << 5) | (t.tm_sec // 2)
    dos_date = ((year - 1980) << 9) | (t.tm_mon << 5) | t.tm_mday
    return dos_time, dos_date


def _local_header(entry: _Planned) -> bytes:
    extra = struct.pack("<HHQQ", 1, 16, 0, 0) if entry.zip64 else b""
    marker = ZIP64_LIMIT if entry.zip64 else 0
    return (
        _LOCAL.pack(
            0x04034B50,
            45 if entry.zip64 else 20,
            _FLAGS,
            0,
            entry.dos_time,
            entry.dos_date,
            0,
            marker,
            marker,
            len(entry.name),
            len(extra),
        )
        + entry.name
        + extra
    )


def _descriptor(entry: _Planned, crc: int) -> bytes:
    if entry.zip64:
        return _DESCRIPTOR64.pack(0x08074B50, crc, entry.size, entry.size)
    return _DESCRIPTOR.pack(0x08074B50, crc, entry.size, entry.size)


def _central_header(entry: _Planned, crc: int, limit: int) -> bytes:
    fields: list[int] = []
    size_field = entry.size
    if entry.zip64:
        fields += [entry.size, entry.size]
        size_field = ZIP64_LIMIT
    offset_field = entry.offset
    if entry.offset >= limit:
        fields.append(entry.offset)
        offset_field = ZIP64_LIMIT
    extra = struct.pack(f"<HH{len(fields)}Q", 1, 8 * len(fields), *fields) if fields else b""
    version = 45 if fields else 20
    return (
        _CENTRAL.pack(
            0x02014B50,
            _MADE_BY_UNIX | version,
            version,
            _FLAGS,
            0,
            entry.dos_time,
            entry.dos_date,
            crc,
            size_field,
            size_field,
            len(entry.name),
            len(extra),
            0,
            0,
            0,
            _FILE_MODE,
            offset_field,
        )
        + entry.name
        + extra
    )


def _central_size(entry: _Planned, limit: int) -> int:
    count = (2 if entry.zip64 else 0) + (1 if entry.offset >= limit else 0)
    return _CENTRAL.size + len(entry.name) + (4 + 8 * count if count else 0)


def _end_records(count: int, cd_offset: int, cd_size: int, limit: int) -> bytes:
    end64 = count >= MAX_ENTRIES or cd_offset >= limit or cd_size >= limit
    out = b""
    if end64:
        end64_offset = cd_offset + cd_size
        out += _END64.pack(
            0x06064B50,
            _END64.size - 12,
            _MADE_BY_UNIX | 45,
            45,
            0,
            0,
            count,
            count,
            cd_size,
            cd_offset,
        )
        out += _LOCATOR64.pack(0x07064B50, 0, end64_offset, 1)
    out += _END.pack(
        0x06054B50,
        0,
        0,
        min(count, MAX_ENTRIES),
        min(count, MAX_ENTRIES),
        min(cd_size, ZIP64_LIMIT),
        min(cd_offset, ZIP64_LIMIT) if not end64 else ZIP64_LIMIT,
        0,
    )
    return out


def _end_size(count: int, cd_offset: int, cd_size: int, limit: int) -> int:
    end64 = count >= MAX_ENTRIES or cd_offset >= limit or cd_size >= limit
    return _END.size + (_END64.size + _LOCATOR64.size if end64 else 0)


class ZipPlan:
    """The layout of one archive; `stream()` produces it, `size` is its exact length."""

    def __init__(self, entries: list[_Planned], size: int, chunk_bytes: int, limit: int) -> None:
        self.entries = entries
        self.size = size
        self.chunk_bytes = chunk_bytes
        self.limit = limit

    async def stream(self) -> AsyncIterator[bytes]:
        """The archive, one header or at most `chunk_bytes` of file data per chunk."""
        crcs: list[int] = []
        position = 0
        for entry in self.entries:
            header = _local_header(entry)
            yield header
            crc = 0
            sent = 0
            # Opened here, not in a thread: a cancelled threaded open would leak the file.
            async with anyio.wrap_file(open(entry.path, "rb")) as handle:  # noqa: ASYNC230
                while True:
                    chunk = await handle.read(min(self.chunk_bytes, entry.size - sent + 1))
                    if not chunk:
                        break
                    sent += len(chunk)
                    if sent > entry.size:
                        break
                    crc = zlib.crc32(chunk, crc)
                    yield chunk
            if sent != entry.size:
                raise ZipChangedError(
                    f"{entry.path.name} changed size while it was being sent "
                    f"({entry.size} bytes planned)"
                )
            crcs.append(crc)
            descriptor = _descriptor(entry, crc)
            yield descriptor
            position += len(header) + sent + len(descriptor)
        central = b"".join(
            _central_header(entry, crc, self.limit)
            for entry, crc in zip(self.entries, crcs, strict=True)
        )
        yield central + _end_records(len(self.entries), position, len(central), self.limit)


def _plan_sync(entries: Sequence[ZipEntry], chunk_bytes: int, limit: int) -> ZipPlan:
    names: set[str] = set()
    planned: list[_Planned] = []
    offset = 0
    for entry in entries:
        if entry.name in names:
            raise ValueError(f"duplicate name in archive: {entry.name!r}")
        names.add(entry.name)
        stat = entry.path.stat()
        dos_time, dos_date = _dos_datetime(stat.st_mtime)
        item = _Planned(
            name=entry.name.encode(),
            path=entry.path,
            size=stat.st_size,
            dos_time=dos_time,
            dos_date=dos_date,
            offset=offset,
            zip64=stat.st_size >= limit,
        )
        planned.append(item)
        offset += (
            _LOCAL.size
            + len(item.name)
            + (20 if item.zip64 else 0)
            + item.size
            + (_DESCRIPTOR64.size if item.zip64 else _DESCRIPTOR.size)
        )
    cd_size = sum(_central_size(item, limit) for item in planned)
    size = offset + cd_size + _end_size(len(planned), offset, cd_size, limit)
    return ZipPlan(planned, size, chunk_bytes, limit)


async def plan_zip(
    entries: Sequence[ZipEntry], *, chunk_bytes: int = CHUNK_BYTES, zip64_limit: int = ZIP64_LIMIT
) -> ZipPlan:
    """Stat the files (in a worker thread) and lay out the archive.

    `zip64_limit` is the size or offset from which ZIP64 fields are used; only tests lower it.
    """
    limit = min(zip64_limit, ZIP64_LIMIT)
    return await asyncio.to_thread(_plan_sync, list(entries), chunk_bytes, limit)
