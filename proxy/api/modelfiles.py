"""Model files: what the shipped workflows need, what ComfyUI has, and downloads of the rest."""

from __future__ import annotations

import logging
from typing import Annotated

from fastapi import APIRouter, Query
from pydantic import BaseModel

from proxy.api.auth import Admin, Caller
from proxy.api.deps import DownloadsDep, PresenceDep
from proxy.auth import Principal
from proxy.modelfiles.downloads import ModelsDirNotConfigured, source_url
from proxy.modelfiles.manifest import Source
from proxy.modelfiles.presence import WorkflowReadiness, compute_presence
from proxy.modelfiles.store import DownloadRecord

log = logging.getLogger("proxy.api")

router = APIRouter(prefix="/api/model-files", tags=["models"])


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
    """One page of downloads, newest first; `total` counts them all."""

    downloads: list[DownloadRecord]
    total: int
    limit: int
    offset: int


def _shown(record: DownloadRecord | None, caller: Principal) -> DownloadRecord | None:
    """A download as this caller may see it: a path on the server is for admins only."""
    if record is None or caller.admin:
        return record
    return record.model_copy(update={"target_path": f"{record.folder}/{record.filename}"})


@router.get("", response_model=ModelFilesOverview)
async def list_model_files(
    downloads: DownloadsDep, presence: PresenceDep, caller: Caller
) -> ModelFilesOverview:
    """List the model files the workflows need, whether ComfyUI has them, and downloads
    (target paths on the server are shown to admin keys only)."""
    manifest = downloads.manifest
    report = await presence.report() if presence is not None else compute_presence(manifest, None)
    latest = await downloads.latest_by_model()
    models = []
    for entry in manifest.models:
        target: str | None = None
        if caller.admin:
            try:
                target = str(downloads.target_path(entry))
            except ModelsDirNotConfigured:
                target = None
        models.append(
            ModelFileState(
                **entry.model_dump(),
                source_url=source_url(entry, downloads.settings),
                target_path=target,
                present=report.models[entry.id],
                download=_shown(latest.get(entry.id), caller),
            )
        )
    return ModelFilesOverview(
        presence_known=report.known, models=models, workflows=list(report.workflows.values())
    )


@router.post("/{model_id}/download", status_code=202, response_model=DownloadRecord)
async def start_download(model_id: str, _admin: Admin, downloads: DownloadsDep) -> DownloadRecord:
    """Start downloading one manifest file (returns the active download if one exists).
    Admin keys only."""
    return await downloads.start_download(model_id)


@router.get("/downloads", response_model=DownloadList)
async def list_downloads(
    downloads: DownloadsDep,
    caller: Caller,
    model_id: Annotated[str | None, Query(description="only this manifest id")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0, le=2**31)] = 0,
) -> DownloadList:
    """List downloads, newest first, a page at a time (`limit`, `offset`); `total` counts
    them all."""
    records = await downloads.list(model_id=model_id, limit=limit, offset=offset)
    return DownloadList(
        downloads=[r for r in (_shown(r, caller) for r in records) if r],
        total=await downloads.count(model_id=model_id),
        limit=limit,
        offset=offset,
    )


@router.get("/downloads/{download_id}", response_model=DownloadRecord)
async def get_download(download_id: str, downloads: DownloadsDep, caller: Caller) -> DownloadRecord:
    """One download with its progress (bytes, percent, speed, ETA) or its error."""
    shown = _shown(await downloads.get(download_id), caller)
    assert shown is not None
    return shown


@router.delete("/downloads/{download_id}", response_model=DownloadRecord)
async def cancel_download(
    download_id: str, _admin: Admin, downloads: DownloadsDep
) -> DownloadRecord:
    """Cancel a queued or running download (its partial file is deleted). Admin keys only."""
    return await downloads.cancel(download_id)
