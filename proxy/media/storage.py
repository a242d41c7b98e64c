"""The proxy's own copy of every output, so ComfyUI may run on another machine and a
restart of either side loses nothing. Files are named after the job, never globbed."""

from __future__ import annotations

import logging
from pathlib import Path

import anyio

from proxy.comfy import ComfyClient, OutputFile
from proxy.errors import ComfyError, NotFound
from proxy.jobs.models import Job, OutputRecord
from proxy.media.probe import content_type_of, probe_video

log = logging.getLogger("proxy.media")


class OutputStore:
    def __init__(self, root: Path) -> None:
        self.root = root

    async def prepare(self) -> None:
        await anyio.Path(self.root).mkdir(parents=True, exist_ok=True)

    def path_for(self, filename: str) -> Path:
        """The stored file of this name; refuses anything that is not a plain file name."""
        if not filename or "/" in filename or "\\" in filename or filename.startswith("."):
            raise NotFound(f"no output named {filename!r}")
        return self.root / filename

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

    async def delete_job(self, job: Job) -> None:
        await self.delete([o.filename for o in job.outputs])

    async def existing(self, job: Job) -> OutputRecord:
        """The job's main output, checked to exist on disk."""
        output = job.video
        if output is None or not await anyio.Path(self.path_for(output.filename)).is_file():
            raise NotFound(f"the output of job {job.id} is missing from storage")
        return output
