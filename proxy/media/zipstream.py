"""A ZIP archive written while it is sent: stored entries (videos do not compress), read
chunk by chunk from disk, never built whole in memory or on disk.

    plan = await plan_zip([ZipEntry("job_0_<id>.mp4", path), ...])
    StreamingResponse(plan.stream(), headers={"Content-Length": str(plan.size)})

The archive itself (headers, CRC-32s in data descriptors, ZIP64 records where 32-bit fields
overflow) comes from zipstream-ng. Its "sized" mode computes the exact length from the file
sizes before anything is sent, so the response carries a Content-Length and clients can show
progress. Its generator is synchronous, so each piece of it is produced in a worker thread.
The file data is read here rather than by the library, exactly the planned number of bytes,
so a file that changes size aborts the stream instead of breaking the announced length.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Generator, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
from zipstream import ZIP_STORED, ZipStream

CHUNK_BYTES = 1 << 20


class ZipChangedError(OSError):
    """A file changed size between planning the archive and sending it."""


@dataclass(frozen=True)
class ZipEntry:
    name: str  # the name inside the archive
    path: Path


@dataclass(frozen=True)
class _Sized:
    entry: ZipEntry
    size: int


def _read_exactly(path: Path, size: int, chunk_bytes: int) -> Iterator[bytes]:
    """The first `size` bytes of the file; an error if it now holds more or fewer."""
    with path.open("rb") as handle:
        left = size
        while left:
            chunk = handle.read(min(chunk_bytes, left))
            if not chunk:
                break
            left -= len(chunk)
            yield chunk
        if left or handle.read(1):
            raise ZipChangedError(
                f"{path.name} changed size while it was being sent ({size} bytes planned)"
            )


def _archive(entries: Sequence[_Sized], chunk_bytes: int) -> Any:
    archive = ZipStream(compress_type=ZIP_STORED, sized=True)
    for item in entries:
        # A lazy iterable with its size: the library neither opens nor reads the file until the
        # archive is generated, and counts on `size` for the length and the ZIP64 decisions.
        data = _read_exactly(item.entry.path, item.size, chunk_bytes)
        archive.add(data, item.entry.name, size=item.size)
    return archive


def _next_piece(pieces: Iterator[bytes]) -> bytes | None:
    return next(pieces, None)


class ZipPlan:
    """The layout of one archive; `stream()` produces it, `size` is its exact length."""

    def __init__(self, entries: list[_Sized], chunk_bytes: int) -> None:
        self.entries = entries
        self.chunk_bytes = chunk_bytes
        self.size: int = len(_archive(entries, chunk_bytes))

    async def stream(self) -> AsyncIterator[bytes]:
        """The archive, one header or at most `chunk_bytes` of file data per chunk."""
        # A fresh archive per call: a zipstream-ng archive can be generated only once.
        pieces: Generator[bytes, None, None] = _archive(self.entries, self.chunk_bytes).finalize()
        try:
            # anyio's worker threads are not abandoned on cancellation (asyncio.to_thread's
            # are), so the generator is never still running in a thread when it is closed below.
            while (piece := await anyio.to_thread.run_sync(_next_piece, pieces)) is not None:
                yield piece
        finally:
            # Closes the open file; on the loop, since a cancelled task could not await a thread.
            pieces.close()


def _plan_sync(entries: Sequence[ZipEntry], chunk_bytes: int) -> ZipPlan:
    names: set[str] = set()
    sized: list[_Sized] = []
    for entry in entries:
        # zipstream-ng would write both; an archive with two equal names is ambiguous to unpack.
        if entry.name in names:
            raise ValueError(f"duplicate name in archive: {entry.name!r}")
        names.add(entry.name)
        sized.append(_Sized(entry, entry.path.stat().st_size))
    return ZipPlan(sized, chunk_bytes)


async def plan_zip(entries: Sequence[ZipEntry], *, chunk_bytes: int = CHUNK_BYTES) -> ZipPlan:
    """Stat the files (in a worker thread) and lay out the archive."""
    return await anyio.to_thread.run_sync(_plan_sync, list(entries), chunk_bytes)
