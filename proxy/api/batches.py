"""The native batches API: `/api/batches` (list, get, delete). Every surface that creates
several jobs at once (seed-004 batches, seed-003 scene generations) makes one of these."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query

from proxy.api.native import job_view
from proxy.batches import Batch, BatchService, Tally
from proxy.errors import NotFound
from proxy.jobs.models import Job
from proxy.services import Services, get_services

router = APIRouter(prefix="/api", tags=["batches"])


def batch_service(services: Annotated[Services, Depends(get_services)]) -> BatchService:
    """The batch service the lifespan put in `services.extras["batches"]`."""
    service = services.extras.get("batches")
    if service is None:
        raise NotFound("batches are not enabled on this server")
    return service  # type: ignore[no-any-return]


BatchesDep = Annotated[BatchService, Depends(batch_service)]
ServicesDep = Annotated[Services, Depends(get_services)]


def batch_summary(batch: Batch, jobs: list[Job | None]) -> dict[str, Any]:
    tally = Tally.of(jobs)
    return {
        "id": batch.id,
        "kind": batch.kind,
        "surface": batch.surface,
        "workflow": batch.workflow,
        "session_id": batch.session_id,
        "params": batch.params,
        "total": tally.total,
        "completed": tally.completed,
        "failed": tally.failed,
        "active": tally.total - tally.completed - tally.failed,
        "finished": tally.finished,
        "final": batch.final,
        "created_at": batch.created_at.isoformat(),
        "updated_at": batch.updated_at.isoformat(),
    }


@router.get("/batches", summary="List batches, newest first")
async def list_batches(
    batches: BatchesDep,
    kind: Annotated[
        str | None, Query(description="Filter: portal (seed 004) or scenes (seed 003)")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> dict[str, Any]:
    """Each batch with its counts (total, completed, failed, active)."""
    items = []
    for batch in await batches.list(kind=kind, limit=limit, offset=offset):
        items.append(batch_summary(batch, await batches.jobs_of(batch)))
    total = await batches.count(kind=kind)
    return {"batches": items, "total": total, "limit": limit, "offset": offset}


@router.get("/batches/{batch_id}", summary="One batch with its jobs")
async def get_batch(batch_id: str, batches: BatchesDep) -> dict[str, Any]:
    """The batch, and its jobs in prompt order (null where a job was deleted)."""
    batch = await batches.get(batch_id)
    jobs = await batches.jobs_of(batch)
    body = batch_summary(batch, jobs)
    body["items"] = [
        {
            "index": index,
            "prompt": item.prompt,
            "label": item.label,
            "job_id": item.job_id,
            "job": job_view(job) if job is not None else None,
        }
        for index, (item, job) in enumerate(zip(batch.items, jobs, strict=True))
    ]
    return body


@router.delete("/batches/{batch_id}", summary="Delete a batch and its jobs")
async def delete_batch(batch_id: str, batches: BatchesDep) -> dict[str, Any]:
    """Stops the batch's running jobs, then removes them, their files and the batch."""
    batch, count = await batches.delete(batch_id)
    return {"id": batch.id, "deleted": True, "jobs_deleted": count}
