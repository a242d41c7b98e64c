"""Model files: what the shipped workflows need, what ComfyUI has, and downloads of the rest."""

from __future__ import annotations

import inspect
import logging
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel

from proxy.errors import ProxyError
from proxy.modelfiles.downloads import DownloadManager, ModelsDirNotConfigured, source_url
from proxy.modelfiles.manifest import Source
from proxy.modelfiles.presence import WorkflowReadiness, compute_presence
from proxy.modelfiles.store import DownloadRecord

log = logging.getLogger("proxy.api")

router = APIRouter(prefix="/api/model-files", tags=["models"])


class DownloadsUnavailable(ProxyError):
    status_code = 503


class ModelFileState(BaseModel):
    """A manifest entry, whether ComfyUI lists it, and its latest download."""

    id: str
    name: str
    folder: str
    filename: str
    source: Source
    source_url: str
    target_path: str | None
    size_bytes: int | None
    approx_size: str | None
    sha256: str | None
    workflows: list[str]
    present: bool | None
    download: DownloadRecord | None


class ModelFilesOverview(BaseModel):
    """Every manifest entry, plus readiness per workflow (`None` = ComfyUI not asked)."""

    presence_known: bool
    models: list[ModelFileState]
    workflows: list[WorkflowReadiness]


class DownloadList(BaseModel):
    downloads: list[DownloadRecord]


async def get_presence(request: Request) -> dict[str, list[str]] | None:
    """ComfyUI's file names per models folder, from `app.state.model_presence` (else None).

    `model_presence` may be the mapping itself or a callable (sync or async) returning it;
    a proxy error from it (ComfyUI unreachable) means "unknown" rather than a failed page.
    """
    provider = getattr(request.app.state, "model_presence", None)
    if provider is None:
        return None
    try:
        value = provider() if callable(provider) else provider
        if inspect.isawaitable(value):
            value = await value
    except ProxyError as exc:
        log.warning("model presence unknown: %s", exc.message)
        return None
    return value


def get_downloads(request: Request) -> DownloadManager:
    manager = getattr(request.app.state, "downloads", None)
    if manager is None:
        raise DownloadsUnavailable("Model downloads are not enabled in this proxy.")
    return manager


Downloads = Annotated[DownloadManager, Depends(get_downloads)]
Presence = Annotated[dict[str, list[str]] | None, Depends(get_presence)]


@router.get("", response_model=ModelFilesOverview)
async def list_model_files(downloads: Downloads, presence: Presence) -> ModelFilesOverview:
    """List the model files the workflows need, whether ComfyUI has them, and downloads."""
    manifest = downloads.manifest
    report = compute_presence(manifest, presence)
    latest = await downloads.latest_by_model()
    models = []
    for entry in manifest.models:
        try:
            target: str | None = str(downloads.target_path(entry))
        except ModelsDirNotConfigured:
            target = None
        models.append(
            ModelFileState(
                **entry.model_dump(),
                source_url=source_url(entry, downloads.settings),
                target_path=target,
                present=report.models[entry.id],
                download=latest.get(entry.id),
            )
        )
    return ModelFilesOverview(
        presence_known=report.known, models=models, workflows=list(report.workflows.values())
    )


@router.post("/{model_id}/download", status_code=202, response_model=DownloadRecord)
async def start_download(model_id: str, downloads: Downloads) -> DownloadRecord:
    """Start downloading one manifest file (returns the active download if one exists)."""
    return await downloads.start_download(model_id)


@router.get("/downloads", response_model=DownloadList)
async def list_downloads(
    downloads: Downloads,
    model_id: Annotated[str | None, Query(description="only this manifest id")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 200,
) -> DownloadList:
    """List downloads, newest first."""
    return DownloadList(downloads=await downloads.list(model_id=model_id, limit=limit))


@router.get("/downloads/{download_id}", response_model=DownloadRecord)
async def get_download(download_id: str, downloads: Downloads) -> DownloadRecord:
    """One download with its progress (bytes, percent, speed, ETA) or its error."""
    return await downloads.get(download_id)


@router.delete("/downloads/{download_id}", response_model=DownloadRecord)
async def cancel_download(download_id: str, downloads: Downloads) -> DownloadRecord:
    """Cancel a queued or running download (its partial file is deleted)."""
    return await downloads.cancel(download_id)
