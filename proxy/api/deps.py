"""What routes depend on: the services (one dependency, and typed accessors built on it, each
replaceable in tests through `app.dependency_overrides`), who is asking, and the one way a
stored file is served."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated, Any

from fastapi import Depends
from fastapi.responses import FileResponse

from proxy.api.auth import Caller
from proxy.batches import BatchService
from proxy.errors import ProxyError
from proxy.media.responses import StoredObjectResponse
from proxy.media.storage import StoredFile
from proxy.modelfiles import DownloadManager
from proxy.modelfiles.presence import ModelPresence
from proxy.prompts import PromptTools
from proxy.services import Services, get_services

ServicesDep = Annotated[Services, Depends(get_services)]


class ServiceUnavailable(ProxyError):
    status_code = 503


async def get_batches(services: ServicesDep) -> BatchService:
    return services.batches


async def get_prompt_tools(services: ServicesDep) -> PromptTools:
    return services.prompt_tools


async def get_downloads(services: ServicesDep) -> DownloadManager:
    if services.downloads is None:
        raise ServiceUnavailable(
            services.problems.get("model_files", "Model downloads are not available.")
        )
    return services.downloads


async def get_presence(services: ServicesDep) -> ModelPresence | None:
    """None when model files cannot be checked (the manifest did not load)."""
    return services.presence


SceneSaver = Callable[[list[dict[str, Any]]], Awaitable[str | None]]


async def get_scene_saver(services: ServicesDep, caller: Caller) -> SceneSaver:
    """How the prompt tools store drafted scenes as a scene session (the caller's)."""

    async def save(scenes: list[dict[str, Any]]) -> str | None:
        return await services.batches.save_scene_session(scenes, caller)

    return save


BatchesDep = Annotated[BatchService, Depends(get_batches)]
ToolsDep = Annotated[PromptTools, Depends(get_prompt_tools)]
DownloadsDep = Annotated[DownloadManager, Depends(get_downloads)]
PresenceDep = Annotated[ModelPresence | None, Depends(get_presence)]
SceneSaverDep = Annotated[SceneSaver, Depends(get_scene_saver)]


def job_limit(services: Services) -> int | None:
    """Active jobs a caller may have at once: with API keys, on every surface
    (MAX_ACTIVE_JOBS_PER_CLIENT); on an open proxy only the Wan2.1 surface limits, per
    address, as its seed documents."""
    return services.settings.max_active_jobs_per_client if services.auth.keys.enabled else None


class LargeFileResponse(FileResponse):
    """Videos are megabytes: read and sent 1 MiB at a time (Starlette's 64 KiB chunks made
    downloads about a sixth as fast as ComfyUI's own `/view`; see bench.download)."""

    chunk_size = 1024 * 1024


def serve_file(file: StoredFile, *, inline: bool = True) -> FileResponse:
    """A stored file with its Content-Type, a file name, and HTTP Range support: from local
    disk, or from its object store (a redirect to a presigned URL, or streamed through)."""
    if file.path is None:
        return StoredObjectResponse(file, inline=inline)
    return LargeFileResponse(
        file.path,
        media_type=file.content_type,
        filename=file.name,
        content_disposition_type="inline" if inline else "attachment",
    )
