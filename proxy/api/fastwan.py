"""Seed 001, the FastWAN 2.2-5B API: `/generate`, `/status`, `/download`, `/jobs`.

Statuses are the seed's words: queued, processing, completed, error.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from proxy import __version__
from proxy.api.deps import client_key, video_response
from proxy.errors import Conflict
from proxy.jobs.models import Job, JobStatus
from proxy.services import Services, get_services

router = APIRouter(tags=["FastWAN API (seed 001)"])

STATUS_WORDS = {
    JobStatus.PENDING: "queued",
    JobStatus.QUEUED: "queued",
    JobStatus.RUNNING: "processing",
    JobStatus.COMPLETED: "completed",
    JobStatus.FAILED: "error",
    JobStatus.CANCELLED: "error",
}


class GenerateRequest(BaseModel):
    """The seed's body; the defaults are FastWAN's (8 steps, cfg 1, 1280x704, 121 frames)."""

    model_config = ConfigDict(extra="forbid")

    prompt: str = Field(min_length=1, description="Text description of the video to generate")
    negative_prompt: str | None = Field(None, description="What to avoid in the generation")
    seed: int | None = Field(None, description="Random seed; drawn at random when omitted")
    steps: int | None = Field(None, description="Denoising steps (default 8)")
    cfg: float | None = Field(None, description="Classifier-free guidance (default 1.0)")
    width: int | None = Field(None, description="Width in pixels, a multiple of 32 (default 1280)")
    height: int | None = Field(None, description="Height in pixels, a multiple of 32 (default 704)")
    length: int | None = Field(None, description="Frames, 4k+1 (default 121)")
    fps: int | None = Field(None, description="Frames per second (default 24)")


def status_body(job: Job) -> dict[str, Any]:
    ready = job.status is JobStatus.COMPLETED and job.video is not None
    return {
        "job_id": job.id,
        "status": STATUS_WORDS[job.status],
        "progress": int(job.progress),
        "video_ready": ready,
        "download_url": f"/download/{job.id}" if ready else None,
        "error": job.error if job.status in (JobStatus.FAILED, JobStatus.CANCELLED) else None,
        "message": job.message,
        "stage": job.stage,
        "step": job.step,
        "steps": job.steps,
        "eta_seconds": job.eta_s,
        "seed": job.seed,
        "prompt": job.params.get("prompt"),
        "created_at": job.created_at.isoformat(),
        "updated_at": job.updated_at.isoformat(),
    }


def health_body(services: Services) -> dict[str, Any]:
    backends = [b.describe() for b in services.pool.backends]
    up = sum(1 for b in backends if b["status"] == "up")
    body: dict[str, Any] = {
        "status": "healthy" if up else "degraded",
        "service": "FastWAN 2.2-5B Video Generation API",
        "version": __version__,
        "model": "FastWAN 2.2-5B (Wan 2.2 TI2V 5B + FastWan LoRA)",
        "comfyui": backends,
        "backends_up": up,
        "standin": services.settings.standin,
    }
    if services.settings.standin:
        body["notice"] = "ComfyUI is the stand-in: videos are synthetic test patterns."
    if not up:
        body["message"] = "No ComfyUI backend is reachable; jobs wait in the queue until one is."
    return body


def wants_html(request: Request) -> bool:
    """Browsers ask for text/html first; curl, requests and n8n send */* or JSON."""
    return "text/html" in request.headers.get("accept", "")


@router.get("/", summary="Health check (JSON), or the web UI for browsers")
async def root(request: Request, services: Services = Depends(get_services)) -> Any:
    """API status as JSON; a browser asking for HTML gets the web UI."""
    # One URL, two representations: caches must key on Accept.
    vary = {"Vary": "Accept"}
    index = getattr(request.app.state, "index_html", None)
    if wants_html(request) and index is not None and index.is_file():
        return FileResponse(index, media_type="text/html", headers=vary)
    if wants_html(request):
        return HTMLResponse(
            "<h1>FastWAN proxy</h1><p>See <a href='/docs'>/docs</a>.</p>", headers=vary
        )
    return JSONResponse(health_body(services), headers=vary)


@router.post("/generate", summary="Generate a video")
async def generate(
    body: GenerateRequest, request: Request, services: Services = Depends(get_services)
) -> dict[str, Any]:
    """Queue a FastWAN text-to-video job; poll `/status/{job_id}`."""
    values = body.model_dump(exclude_none=True)
    job = await services.jobs.create(
        services.settings.default_workflow,
        values,
        surface="fastwan",
        client_key=client_key(request),
    )
    return {
        "job_id": job.id,
        "status": "queued",
        "message": "Video generation started",
        "seed": job.seed,
    }


@router.get("/status/{job_id}", summary="Check job status")
async def status(job_id: str, services: Services = Depends(get_services)) -> dict[str, Any]:
    """Status (queued/processing/completed/error), progress 0-100, and the download URL."""
    return status_body(await services.jobs.get(job_id))


@router.get("/download/{job_id}", summary="Download the video", response_class=FileResponse)
async def download(job_id: str, services: Services = Depends(get_services)) -> FileResponse:
    """The MP4 (HTTP Range supported). 409 with the current status while it is not ready."""
    job = await services.jobs.get(job_id)
    if job.status is not JobStatus.COMPLETED:
        word = STATUS_WORDS[job.status]
        detail = f" ({job.error})" if job.error else ""
        raise Conflict(
            f"Video not ready: job {job_id} is {word}{detail}",
            status=word,
            progress=int(job.progress),
        )
    return await video_response(services, job, inline=False)


@router.get("/jobs", summary="List all jobs")
async def list_jobs(services: Services = Depends(get_services)) -> dict[str, Any]:
    """Every job, newest first."""
    jobs = await services.jobs.list()
    return {"jobs": [status_body(j) for j in jobs], "total": len(jobs)}


@router.delete("/jobs/{job_id}", summary="Delete a job")
async def delete_job(job_id: str, services: Services = Depends(get_services)) -> dict[str, Any]:
    """Cancel the job if it is queued or running, then remove its files and record."""
    await services.jobs.delete(job_id)
    return {"job_id": job_id, "deleted": True, "message": "Job deleted"}
