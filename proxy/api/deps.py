"""Small request helpers shared by the routers."""

from __future__ import annotations

from pathlib import Path

from fastapi import Request
from fastapi.responses import FileResponse

from proxy.errors import Conflict
from proxy.jobs.models import Job, JobStatus
from proxy.services import Services


def client_key(request: Request) -> str:
    """Who is asking, for per-client limits: the API key when keys are configured, else the
    client address."""
    settings = request.app.state.settings
    if settings.api_keys:
        key = request.headers.get("x-api-key") or request.headers.get("authorization", "")
        key = key.removeprefix("Bearer ").strip()
        if key:
            return f"key:{key}"
    host = request.client.host if request.client else "unknown"
    return f"addr:{host}"


async def video_response(services: Services, job: Job, *, inline: bool) -> FileResponse:
    """The job's video with Content-Type, a filename, and HTTP Range support."""
    if job.status is not JobStatus.COMPLETED:
        raise Conflict(
            f"job {job.id} is {job.status.value}; the video is not ready",
            status=job.status.value,
        )
    output = await services.outputs.existing(job)
    return file_response(services.outputs.path_for(output.filename), output.content_type, inline)


def file_response(path: Path, media_type: str, inline: bool) -> FileResponse:
    return FileResponse(
        path,
        media_type=media_type,
        filename=path.name,
        content_disposition_type="inline" if inline else "attachment",
    )
