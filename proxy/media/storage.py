"""The proxy's own copy of every output, so ComfyUI may run on another machine and a
restart of either side loses nothing. Files are named after the job, never globbed.

Every file the API serves from storage goes through `OutputStore.open` (or `open_output`),
which refuses anything that is not a finished output's plain name: paths, hidden files,
unfinished `.part` files, control characters and over-long names are all "not found".
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import anyio
from pydantic import BaseModel

from proxy.comfy import ComfyClient, OutputFile
from proxy.errors import ComfyError, NotFound
from proxy.media.probe import content_type_of, probe_video

log = logging.getLogger("proxy.media")

# The longest file name most file systems store (ext4, APFS, NTFS).
MAX_NAME_CHARS = 255
PARTIAL_SUFFIX = ".part"


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


@dataclass(frozen=True)
class StoredFile:
    """A finished file in storage, ready to be served."""

    path: Path
    content_type: str

    @property
    def name(self) -> str:
        return self.path.name


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


class OutputStore:
    def __init__(self, root: Path) -> None:
        self.root = root

    async def prepare(self) -> None:
        await anyio.Path(self.root).mkdir(parents=True, exist_ok=True)

    def path_for(self, filename: str) -> Path:
        """The stored file of this name; refuses anything that is not a plain file name."""
        if not plain_name(filename):
            raise NotFound(f"no output named {filename[:80]!r}")
        return self.root / filename

    async def open(self, filename: str, content_type: str | None = None) -> StoredFile:
        """The finished file of this name, checked to exist; NotFound otherwise."""
        path = self.path_for(filename)
        if not await anyio.Path(path).is_file():
            raise NotFound(f"no output named {filename!r}")
        return StoredFile(path, content_type or content_type_of(path))

    async def open_output(self, record: OutputRecord | None, owner: str) -> StoredFile:
        """A job's output, checked to exist; `owner` names the job in the error."""
        if record is None:
            raise NotFound(f"{owner} has no output")
        try:
            return await self.open(record.filename, record.content_type)
        except NotFound:
            raise NotFound(f"the output of {owner} is missing from storage") from None

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
                dest = self.path_for(name)
                size = await client.download(file, dest)
                record = OutputRecord(
                    filename=name,
                    content_type=content_type_of(dest),
                    size_bytes=size,
                    node_id=file.node_id,
                    comfy_filename=f"{file.subfolder}/{file.filename}".lstrip("/"),
                )
                if record.content_type.startswith("video/"):
                    try:
                        info = await probe_video(dest)
                    except (OSError, ValueError, IndexError) as exc:
                        raise ComfyError(
                            f"ComfyUI's output {file.filename} is not a readable video: {exc}"
                        ) from exc
                    record = record.model_copy(
                        update={
                            k: info[k] for k in ("width", "height", "frames", "fps", "duration_s")
                        }
                    )
                records.append(record)
        except BaseException:
            await self.delete([r.filename for r in records])
            raise
        return records

    async def delete(self, filenames: list[str]) -> None:
        for name in filenames:
            await anyio.Path(self.path_for(name)).unlink(missing_ok=True)
