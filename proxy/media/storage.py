"""The proxy's own copy of every output, so ComfyUI may run on another machine and a
restart of either side loses nothing. Files are named after the job, never globbed.

Two stores behind one interface, chosen from the settings by `output_store_for`:

    OutputStore            a folder on local disk (OUTPUT_DIR): the default
    └── S3OutputStore      an S3-compatible bucket (OUTPUT_STORE=s3://…, proxy.media.s3)

Every file the API serves from storage goes through `OutputStore.open` (or `open_output`),
which refuses anything that is not a finished output's plain name: paths, hidden files,
unfinished `.part` files, control characters and over-long names are all "not found".
Files arrive through `writing` (a local path to write, stored only when the block ends well)
and are read as local files, for PyAV, through `reading`; nothing half-written is served.
A bucket also keeps the jobs' input files (`keeps_inputs`, `put_input`, `reading_input`):
every replica then reads them; on local disk they stay in UPLOADS_DIR.

A store's own backend failing is one of ours, translated where it happens:

    ProxyError
    └── StoreError             502: the store answered, but not as asked (bucket missing,
        │                           credentials refused); the message says what to check
        └── StoreUnavailable   503: the store cannot be reached, or is failing
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Protocol, Self

import anyio
from pydantic import BaseModel

from proxy.comfy import ComfyClient, OutputFile
from proxy.errors import ComfyError, NotFound, ProxyError
from proxy.media.probe import content_type_of, probe_video

if TYPE_CHECKING:
    from proxy.settings import Settings

log = logging.getLogger("proxy.media")

# The longest file name most file systems store (ext4, APFS, NTFS).
MAX_NAME_CHARS = 255
PARTIAL_SUFFIX = ".part"


class StoreError(ProxyError):
    """The output store answered, but not with what was asked (see the module docstring)."""

    status_code = 502


class StoreUnavailable(StoreError):
    """The output store cannot be reached, or answers that it is failing."""

    status_code = 503
    retry_after_s = 5  # answered as Retry-After: a store outage is usually brief


class OutputRecord(BaseModel):
    """One stored output file (relative to the outputs folder)."""

    filename: str
    content_type: str
    size_bytes: int
    node_id: str
    comfy_filename: str
    width: int | None = None
    height: int | None = None
    frames: int | None = None
    fps: float | None = None
    duration_s: float | None = None


class ObjectStream(Protocol):
    """The bytes of one stored object (or a range of them), read in order."""

    length: int  # how many bytes the stream delivers

    async def read(self, max_bytes: int) -> bytes:
        """Up to `max_bytes` (fewer only at the end; b"" once it is over)."""
        ...

    async def aclose(self) -> None: ...


class RemoteObjects(Protocol):
    """What serves the bytes of a file kept in an object store."""

    proxy_downloads: bool  # stream through the proxy rather than redirect

    async def presigned_url(self, file: StoredFile, *, inline: bool) -> str:
        """A URL that lets whoever has it GET the object for a while (Range allowed)."""
        ...

    async def open_stream(
        self, file: StoredFile, first: int = 0, last: int | None = None
    ) -> ObjectStream:
        """Bytes `first` to `last` (inclusive; None: to the end) of the object."""
        ...


@dataclass(frozen=True)
class StoredFile:
    """A finished output, ready to be served: a file on local disk (`path`), or an object
    in a store (`remote` serves its bytes)."""

    name: str
    content_type: str
    path: Path | None = None
    size_bytes: int | None = None
    etag: str | None = None
    modified: datetime | None = None
    remote: RemoteObjects | None = None

    @classmethod
    def local(cls, path: Path, content_type: str | None = None) -> StoredFile:
        return cls(path.name, content_type or content_type_of(path), path=path)


def plain_name(filename: str) -> bool:
    """Whether `filename` can name a finished output (and nothing else on the disk)."""
    return (
        0 < len(filename) <= MAX_NAME_CHARS
        and "/" not in filename
        and "\\" not in filename
        and not filename.startswith(".")
        and not filename.endswith(PARTIAL_SUFFIX)
        and all(ord(c) >= 32 and ord(c) != 127 for c in filename)
    )


def checked_name(filename: str) -> str:
    """`filename` if it can name a finished output; NotFound otherwise."""
    if not plain_name(filename):
        raise NotFound(f"no output named {filename[:80]!r}")
    return filename


class OutputStore:
    """Outputs as files in one folder on local disk; the interface every store offers.

    Used as an async context manager (the lifespan's): `prepare` on entry, `close` on exit.
    """

    def __init__(self, root: Path) -> None:
        self.root = root

    async def __aenter__(self) -> Self:
        await self.prepare()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def prepare(self) -> None:
        await anyio.Path(self.root).mkdir(parents=True, exist_ok=True)

    async def close(self) -> None:
        """Let go of what `prepare` opened (nothing, on local disk)."""

    def path_for(self, filename: str) -> Path:
        """The stored file of this name; refuses anything that is not a plain file name."""
        return self.root / checked_name(filename)

    async def open(self, filename: str, content_type: str | None = None) -> StoredFile:
        """The finished file of this name, checked to exist; NotFound otherwise."""
        path = self.path_for(filename)
        if not await anyio.Path(path).is_file():
            raise NotFound(f"no output named {filename!r}")
        return StoredFile.local(path, content_type)

    async def open_output(self, record: OutputRecord | None, owner: str) -> StoredFile:
        """A job's output, checked to exist; `owner` names the job in the error."""
        if record is None:
            raise NotFound(f"{owner} has no output")
        try:
            return await self.open(record.filename, record.content_type)
        except NotFound:
            raise NotFound(f"the output of {owner} is missing from storage") from None

    async def exists(self, filename: str) -> bool:
        try:
            await self.open(filename)
        except NotFound:
            return False
        return True

    @asynccontextmanager
    async def writing(self, filename: str, content_type: str | None = None) -> AsyncIterator[Path]:
        """A local path to write the output `filename` at (whoever writes it makes it appear
        whole: a `.part` file renamed, say). Stored when the block ends without an error; on
        an error (or cancellation) nothing of it is kept."""
        path = self.path_for(filename)
        try:
            yield path
        except BaseException:
            await anyio.Path(path).unlink(missing_ok=True)
            raise

    @asynccontextmanager
    async def reading(self, filenames: Sequence[str]) -> AsyncIterator[list[Path]]:
        """The outputs as local files, in order, for as long as the block runs."""
        yield [self.path_for(name) for name in filenames]

    async def save(
        self, job_id: str, client: ComfyClient, files: list[OutputFile]
    ) -> list[OutputRecord]:
        """Copy a job's outputs out of ComfyUI (videos first); nothing half-written remains."""
        ordered = sorted(files, key=lambda f: not f.is_video)
        records: list[OutputRecord] = []
        try:
            for index, file in enumerate(ordered):
                suffix = Path(file.filename).suffix.lower() or ".bin"
                name = f"{job_id}{suffix}" if index == 0 else f"{job_id}_{index}{suffix}"
                content_type = content_type_of(Path(name))
                async with self.writing(name, content_type) as dest:
                    size = await client.download(file, dest)
                    record = OutputRecord(
                        filename=name,
                        content_type=content_type,
                        size_bytes=size,
                        node_id=file.node_id,
                        comfy_filename=f"{file.subfolder}/{file.filename}".lstrip("/"),
                    )
                    if content_type.startswith("video/"):
                        record = await _with_video_info(record, dest, file.filename)
                records.append(record)
        except BaseException:
            await self.discard([r.filename for r in records])
            raise
        return records

    async def delete(self, filenames: list[str]) -> None:
        """Remove these outputs (those already gone are no error)."""
        for name in filenames:
            await anyio.Path(self.path_for(name)).unlink(missing_ok=True)

    async def discard(self, filenames: list[str]) -> None:
        """`delete`, for clean-ups after another failure: a store that fails is logged, so
        the failure that led here is the one reported."""
        try:
            await self.delete(filenames)
        except StoreError as exc:
            log.warning("outputs %s not removed: %s", ", ".join(filenames), exc.message)

    # -- inputs -----------------------------------------------------------------------------
    # A store that every replica reads (a bucket) also keeps the jobs' input files (see
    # proxy.media.inputs), so the replica that hands a job to ComfyUI need not be the one that
    # received its image. On local disk inputs stay in UPLOADS_DIR: none of these is called.

    keeps_inputs = False

    async def put_input(self, path: Path, name: str, content_type: str | None = None) -> None:
        """Keep the local file `path` as the input `name`."""
        raise NotImplementedError(f"{type(self).__name__} keeps no inputs")

    async def copy_input(self, source: str, name: str) -> None:
        """Keep the input `source` again as `name` (NotFound when `source` is not kept)."""
        raise NotImplementedError(f"{type(self).__name__} keeps no inputs")

    def reading_input(self, name: str) -> AbstractAsyncContextManager[Path]:
        """The input `name` as a local file while the block runs (NotFound if not kept)."""
        raise NotImplementedError(f"{type(self).__name__} keeps no inputs")

    async def delete_inputs(self, names: Sequence[str]) -> None:
        """Remove these inputs (those already gone are no error)."""
        raise NotImplementedError(f"{type(self).__name__} keeps no inputs")


async def _with_video_info(record: OutputRecord, path: Path, comfy_name: str) -> OutputRecord:
    try:
        info = await probe_video(path)
    except (OSError, ValueError, IndexError) as exc:
        raise ComfyError(f"ComfyUI's output {comfy_name} is not a readable video: {exc}") from exc
    return record.model_copy(
        update={k: info[k] for k in ("width", "height", "frames", "fps", "duration_s")}
    )


def output_store_for(settings: Settings) -> OutputStore:
    """The store OUTPUT_STORE names: a bucket, or (unset) the folder OUTPUT_DIR."""
    if settings.output_store is None:
        return OutputStore(settings.outputs_path)
    from proxy.media.s3 import S3OutputStore  # botocore is imported only when it is used

    return S3OutputStore.from_settings(settings)
