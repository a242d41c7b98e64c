"""The native batches API: `/api/batches` (list, get, delete). Every surface that creates
several jobs at once (seed-004 batches, seed-003 scene generations) makes one of these."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query

from proxy.api.auth import Caller
from proxy.api.deps import BatchesDep
from proxy.api.links import LinksDep
from proxy.api.native import job_view
from proxy.batches import Batch, Tally
from proxy.jobs.models import Job

router = APIRouter(prefix="/api", tags=["batches"])


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
    caller: Caller,
    kind: Annotated[
        str | None, Query(description="Filter: portal (seed 004) or scenes (seed 003)")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 50,
    offset: Annotated[int, Query(ge=0, le=2**31)] = 0,
) -> dict[str, Any]:
    """Each batch with its counts (total, completed, failed, active)."""
    items = []
    for batch in await batches.list(kind=kind, limit=limit, offset=offset, caller=caller):
        items.append(batch_summary(batch, await batches.jobs_of(batch)))
    total = await batches.count(kind=kind, caller=caller)
    return {"batches": items, "total": total, "limit": limit, "offset": offset}


@router.get("/batches/{batch_id}", summary="One batch with its jobs")
async def get_batch(
    batch_id: str, batches: BatchesDep, caller: Caller, links: LinksDep
) -> dict[str, Any]:
    """The batch, and its jobs in prompt order (null where a job was deleted)."""
    batch = await batches.get(batch_id, caller)
    jobs = await batches.jobs_of(batch)
    body = batch_summary(batch, jobs)
    body["items"] = [
        {
            "index": index,
            "prompt": item.prompt,
            "label": item.label,
            "job_id": item.job_id,
            "job": job_view(job, links) if job is not None else None,
        }
        for index, (item, job) in enumerate(zip(batch.items, jobs, strict=True))
    ]
    return body


@router.delete("/batches/{batch_id}", summary="Delete a batch and its jobs")
async def delete_batch(batch_id: str, batches: BatchesDep, caller: Caller) -> dict[str, Any]:
    """Stops the batch's running jobs, then removes them, their files and the batch."""
    batch, count = await batches.delete(batch_id, caller)
    return {"id": batch.id, "deleted": True, "jobs_deleted": count}
