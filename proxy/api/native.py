"""The native jobs API (seed 000, the Job Runner UI): `/api/models`, `/api/jobs`, and the
per-job video. Jobs can be created without starting; stop then start is a new attempt."""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import FileResponse
from pydantic import BaseModel, ConfigDict, Field

from proxy.api.deps import client_key, video_response
from proxy.errors import InvalidInput, NotFound
from proxy.jobs.models import Job, JobStatus
from proxy.services import Services, get_services

router = APIRouter(prefix="/api", tags=["jobs"])

# The seed's word for a cancelled job is "stopped".
NATIVE_WORDS = {s: s.value for s in JobStatus} | {JobStatus.CANCELLED: "stopped"}
FROM_WORD = {word: status for status, word in NATIVE_WORDS.items()} | {
    "cancelled": JobStatus.CANCELLED
}

# Seed-000 field names → workflow parameters.
FIELD_MAP = {
    "num_inference_steps": "steps",
    "num_frames": "length",
    "guidance_scale": "cfg",
}


class CreateJob(BaseModel):
    """The seed's body. Omitted fields take the workflow's defaults (FastWAN: 8 steps,
    121 frames, 1280x704, cfg 1.0), which suit this model better than the seed's."""

    model_config = ConfigDict(extra="forbid")

    model_id: str = Field("fastwan_t2v", description="A workflow id or one of its aliases")
    prompt: str = Field(min_length=1)
    negative_prompt: str | None = None
    num_inference_steps: int | None = None
    num_frames: int | None = None
    height: int | None = None
    width: int | None = None
    guidance_scale: float | None = None
    seed: int | None = None
    fps: int | None = None
    num_gpus: int = Field(
        1, ge=1, le=64, description="Accepted for compatibility; one job runs on one GPU"
    )
    params: dict[str, Any] = Field(default_factory=dict, description="Any other workflow parameter")
    start: bool = Field(True, description="false: create the job without starting it")


def job_view(job: Job) -> dict[str, Any]:
    data = job.model_dump(mode="json")
    data["status"] = NATIVE_WORDS[job.status]
    data["model_id"] = job.workflow
    data["prompt"] = job.params.get("prompt")
    data["seed"] = job.seed
    for attempt in data["attempts"]:
        attempt["status"] = NATIVE_WORDS[JobStatus(attempt["status"])]
    video = job.video if job.status is JobStatus.COMPLETED else None
    data["video_url"] = f"/api/jobs/{job.id}/video" if video else None
    data.pop("inputs", None)
    return data


@router.get("/models", summary="Workflows this server offers")
async def models(services: Services = Depends(get_services)) -> dict[str, Any]:
    """Each workflow with its parameters (types, defaults, ranges) and model-file readiness."""
    presence = services.extras.get("presence")
    readiness = await presence() if presence is not None else {}
    items = []
    for name in services.registry.names():
        info = services.registry.get(name).describe()
        info.update(readiness.get(name, {}))
        items.append(info)
    broken = [{"id": n, "problems": p} for n, p in services.registry.broken.items()]
    return {"models": items, "unavailable": broken, "standin": services.settings.standin}


@router.get("/jobs", summary="List jobs, newest first")
async def list_jobs(
    status: str | None = Query(
        None, description="Filter: pending, queued, running, completed, failed, stopped"
    ),
    limit: int = Query(50, ge=1, le=500),
    offset: int = Query(0, ge=0),
    services: Services = Depends(get_services),
) -> dict[str, Any]:
    statuses = None
    if status:
        words = [w.strip() for w in status.split(",") if w.strip()]
        unknown = [w for w in words if w not in FROM_WORD]
        if unknown:
            raise InvalidInput(
                "status",
                f"unknown status {unknown[0]!r}; use one of {', '.join(NATIVE_WORDS.values())}",
            )
        statuses = [FROM_WORD[w] for w in words]
    jobs = await services.jobs.list(statuses=statuses, limit=limit, offset=offset)
    total = await services.jobs.count(statuses=statuses)
    return {"jobs": [job_view(j) for j in jobs], "total": total, "limit": limit, "offset": offset}


@router.post("/jobs", status_code=201, summary="Create a job (and start it unless start=false)")
async def create_job(
    body: CreateJob, request: Request, services: Services = Depends(get_services)
) -> dict[str, Any]:
    try:
        workflow = services.registry.get(body.model_id)
    except NotFound:
        served = services.registry.names() + [
            a for n in services.registry.names() for a in services.registry.get(n).spec.aliases
        ]
        raise InvalidInput(
            "model_id", f"{body.model_id!r} is not served; use one of: {', '.join(served)}"
        ) from None
    values: dict[str, Any] = {}
    raw = body.model_dump(exclude={"model_id", "num_gpus", "params", "start"}, exclude_none=True)
    for key, value in raw.items():
        values[FIELD_MAP.get(key, key)] = value
    values.update(body.params)
    job = await services.jobs.create(
        workflow.name,
        values,
        surface="native",
        client_key=client_key(request),
        start=body.start,
        request=body.model_dump(exclude_none=True),
    )
    return job_view(job)


@router.get("/jobs/{job_id}", summary="One job")
async def get_job(job_id: str, services: Services = Depends(get_services)) -> dict[str, Any]:
    return job_view(await services.jobs.get(job_id))


@router.post("/jobs/{job_id}/start", summary="Start a pending, stopped or failed job")
async def start_job(job_id: str, services: Services = Depends(get_services)) -> dict[str, Any]:
    """Starting again after a stop or failure is a new attempt; the job keeps its history."""
    return job_view(await services.jobs.start(job_id))


@router.post("/jobs/{job_id}/stop", summary="Stop a queued or running job")
async def stop_job(job_id: str, services: Services = Depends(get_services)) -> dict[str, Any]:
    """Removes the job's prompt from ComfyUI's queue, or interrupts it if running."""
    return job_view(await services.jobs.stop(job_id))


@router.delete("/jobs/{job_id}", summary="Delete a job and its files")
async def delete_job(job_id: str, services: Services = Depends(get_services)) -> dict[str, Any]:
    await services.jobs.delete(job_id)
    return {"id": job_id, "deleted": True}


@router.get("/jobs/{job_id}/video", summary="Stream the video", response_class=FileResponse)
async def job_video(job_id: str, services: Services = Depends(get_services)) -> FileResponse:
    """The finished MP4, inline, with HTTP Range (the browser player seeks with it)."""
    return await video_response(services, await services.jobs.get(job_id), inline=True)


@router.get("/backends", summary="The ComfyUI backends (one per GPU)")
async def backends(services: Services = Depends(get_services)) -> dict[str, Any]:
    return {"backends": [b.describe() for b in services.pool.backends]}


Health = Literal["healthy", "degraded"]
