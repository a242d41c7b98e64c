"""A ZIP archive written while it is sent: stored entries (videos do not compress), read
chunk by chunk from disk or from an object store, never built whole in memory or on disk.

    plan = await plan_zip([ZipEntry("job_0_<id>.mp4", path_or_stored_file), ...])
    StreamingResponse(plan.stream(), headers={"Content-Length": str(plan.size)})

The archive itself (headers, CRC-32s in data descriptors, ZIP64 records where 32-bit fields
overflow) comes from zipstream-ng. Its "sized" mode computes the exact length from the file
sizes before anything is sent, so the response carries a Content-Length and clients can show
progress. Its generator is synchronous, so each piece of it is produced in a worker thread.
The file data is read here rather than by the library, exactly the planned number of bytes,
so a file that changes size aborts the stream instead of breaking the announced length.
An object in a store is read through one streamed GET per entry; the worker thread that
produces the archive asks the event loop for each chunk of it (`anyio.from_thread`), and
every stream still open when the archive ends (or is abandoned) is closed on the loop.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Generator, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import anyio.from_thread
from zipstream import ZIP_STORED, ZipStream

from proxy.media.storage import ObjectStream, StoredFile

CHUNK_BYTES = 1 << 20


class ZipChangedError(OSError):
    """A file changed size between planning the archive and sending it."""


@dataclass(frozen=True)
class ZipEntry:
    name: str  # the name inside the archive
    source: Path | StoredFile  # a file on disk, or a stored output (on disk or in a store)

    @property
    def path(self) -> Path | None:
        """The entry's file on local disk, if it has one."""
        if isinstance(self.source, Path):
            return self.source
        return self.source.path


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


def _read_remote(
    file: StoredFile, size: int, chunk_bytes: int, opened: list[ObjectStream]
) -> Iterator[bytes]:
    """As `_read_exactly`, for an object in a store; runs in the archive's worker thread."""
    assert file.remote is not None
    stream = anyio.from_thread.run(file.remote.open_stream, file)
    opened.append(stream)
    left = size
    while left:
        chunk = anyio.from_thread.run(stream.read, min(chunk_bytes, left))
        if not chunk:
            break
        left -= len(chunk)
        yield chunk
    if left or stream.length != size or anyio.from_thread.run(stream.read, 1):
        raise ZipChangedError(
            f"{file.name} changed size while it was being sent ({size} bytes planned)"
        )
    opened.remove(stream)
    anyio.from_thread.run(stream.aclose)


def _archive(entries: Sequence[_Sized], chunk_bytes: int, opened: list[ObjectStream]) -> Any:
    archive = ZipStream(compress_type=ZIP_STORED, sized=True)
    for item in entries:
        # A lazy iterable with its size: the library neither opens nor reads the file until the
        # archive is generated, and counts on `size` for the length and the ZIP64 decisions.
        path, source = item.entry.path, item.entry.source
        if path is not None:
            data = _read_exactly(path, item.size, chunk_bytes)
        else:
            assert isinstance(source, StoredFile)
            data = _read_remote(source, item.size, chunk_bytes, opened)
        archive.add(data, item.entry.name, size=item.size)
    return archive


def _next_piece(pieces: Iterator[bytes]) -> bytes | None:
    return next(pieces, None)


class ZipPlan:
    """The layout of one archive; `stream()` produces it, `size` is its exact length."""

    def __init__(self, entries: list[_Sized], chunk_bytes: int) -> None:
        self.entries = entries
        self.chunk_bytes = chunk_bytes
        self.size: int = len(_archive(entries, chunk_bytes, []))

    async def stream(self) -> AsyncIterator[bytes]:
        """The archive, one header or at most `chunk_bytes` of file data per chunk."""
        # A fresh archive per call: a zipstream-ng archive can be generated only once.
        opened: list[ObjectStream] = []
        archive = _archive(self.entries, self.chunk_bytes, opened)
        pieces: Generator[bytes, None, None] = archive.finalize()
        try:
            # anyio's worker threads are not abandoned on cancellation (asyncio.to_thread's
            # are), so the generator is never still running in a thread when it is closed below.
            while (piece := await anyio.to_thread.run_sync(_next_piece, pieces)) is not None:
                yield piece
        finally:
            # Closes the open file; on the loop, since a cancelled task could not await a thread.
            pieces.close()
            with anyio.CancelScope(shield=True):
                for stream in opened:
                    await stream.aclose()


def _plan_sync(entries: Sequence[ZipEntry], chunk_bytes: int) -> ZipPlan:
    names: set[str] = set()
    sized: list[_Sized] = []
    for entry in entries:
        # zipstream-ng would write both; an archive with two equal names is ambiguous to unpack.
        if entry.name in names:
            raise ValueError(f"duplicate name in archive: {entry.name!r}")
        names.add(entry.name)
        if entry.path is not None:
            size = entry.path.stat().st_size
        else:
            assert isinstance(entry.source, StoredFile) and entry.source.remote is not None
            if entry.source.size_bytes is None:
                raise ValueError(f"{entry.source.name} has no known size")
            size = entry.source.size_bytes
        sized.append(_Sized(entry, size))
    return ZipPlan(sized, chunk_bytes)


async def plan_zip(entries: Sequence[ZipEntry], *, chunk_bytes: int = CHUNK_BYTES) -> ZipPlan:
    """Stat the files (in a worker thread; objects in a store come with their size) and lay
    out the archive."""
    return await anyio.to_thread.run_sync(_plan_sync, list(entries), chunk_bytes)
