"""Seed 001, the FastWAN 2.2-5B API: `/generate`, `/status`, `/download`, `/jobs`.

The request body is the default workflow's own parameters, under their own names (omitted:
the workflow's defaults, FastWAN's 8 steps, cfg 1, 1280x704, 121 frames at 24 fps).
"""

from pathlib import Path
from typing import Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse
from pydantic import BaseModel

from proxy import __version__
from proxy.api.auth import Caller, wants_html
from proxy.api.callbacks import CALLBACK_FIELDS, CALLBACK_KEYS, with_callback
from proxy.api.deps import ServicesDep, job_limit, serve_file
from proxy.api.health import run_problems
from proxy.api.links import Links, LinksDep
from proxy.api.surface import Surface
from proxy.api.waiting import created_answer, requested_wait, status_answer
from proxy.auth import Principal
from proxy.errors import Conflict
from proxy.jobs.models import Job, JobPhase, JobStatus
from proxy.services import Services
from proxy.workflows import WorkflowRegistry

INDEX_HTML = Path(__file__).resolve().parent.parent / "static" / "index.html"

SURFACE = Surface("fastwan")

STATUS_WORDS = {
    JobPhase.CREATED: "queued",
    JobPhase.WAITING: "queued",
    JobPhase.RETRYING: "queued",
    JobPhase.RUNNING: "processing",
    JobPhase.STORING: "processing",
    JobPhase.SUCCEEDED: "completed",
    JobPhase.FAILED: "error",
    JobPhase.CANCELLED: "error",
}


def status_body(job: Job, links: Links) -> dict[str, Any]:
    ready = job.finished_video is not None
    path = f"/download/{job.id}" if ready else None
    return {
        "job_id": job.id,
        "status": STATUS_WORDS[job.phase],
        "progress": int(job.progress),
        "video_ready": ready,
        "download_url": links.maybe(path),
        **links.signed(path, job.client_key),
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


def health_body(services: Services, caller: Principal) -> dict[str, Any]:
    """The seed's health answer; the backends in detail (URLs, errors) for admins only."""
    health = services.pool.health()
    problems = run_problems(services)
    body: dict[str, Any] = {
        "status": "degraded" if problems else "healthy",
        "service": "FastWAN 2.2-5B Video Generation API",
        "version": __version__,
        "model": "FastWAN 2.2-5B (Wan 2.2 TI2V 5B + FastWan LoRA)",
        "comfyui": health.backends if caller.admin else [],
        "backends_up": health.up,
        "backends": health.total,
        "standin": services.settings.standin,
    }
    if services.settings.standin:
        body["notice"] = "ComfyUI is the stand-in: videos are synthetic test patterns."
    if not health.up:
        body["message"] = "No ComfyUI backend is reachable; jobs wait in the queue until one is."
    elif problems:
        body["message"] = f"Jobs are not being run: {'; '.join(problems)}."
    return body


def build(registry: WorkflowRegistry, default_workflow: str) -> APIRouter:
    router = APIRouter(tags=["FastWAN API (seed 001)"])
    flow = registry.get(default_workflow)
    generate_request: type[BaseModel] = SURFACE.model(
        flow,
        "GenerateRequest",
        doc="The seed's body: the workflow's parameters; omitted ones take its defaults "
        "(FastWAN: 8 steps, cfg 1, 1280x704, 121 frames at 24 fps).",
        fields=CALLBACK_FIELDS,
    )

    @router.get("/", summary="Health check (JSON), or the web UI for browsers")
    async def root(request: Request, services: ServicesDep, caller: Caller) -> Any:
        """API status as JSON; a browser asking for HTML gets the web UI."""
        # One URL, two representations: caches must key on Accept.
        vary = {"Vary": "Accept"}
        if wants_html(request) and INDEX_HTML.is_file():
            return FileResponse(INDEX_HTML, media_type="text/html", headers=vary)
        if wants_html(request):
            return HTMLResponse(
                "<h1>FastWAN proxy</h1><p>See <a href='/docs'>/docs</a>.</p>", headers=vary
            )
        return JSONResponse(health_body(services, caller), headers=vary)

    @router.post("/generate", summary="Generate a video")
    async def generate(
        body: generate_request,  # type: ignore[valid-type]
        request: Request,
        services: ServicesDep,
        caller: Caller,
        links: LinksDep,
    ) -> Any:
        """Queue a FastWAN text-to-video job; poll `/status/{job_id}`. With `Prefer: wait=N`
        (or `?wait=N`): the status once the video is ready (200), or after N s (202)."""
        requested_wait(request, services.settings.max_wait_s)
        values = SURFACE.values(body, skip=CALLBACK_KEYS)
        job = await with_callback(
            services,
            links,
            body,
            lambda: SURFACE.create_job(
                services.jobs, flow.name, values, caller, max_active=job_limit(services)
            ),
        )
        answer = {
            "job_id": job.id,
            "status": "queued",
            "message": "Video generation started",
            "seed": job.seed,
        }

        async def view() -> dict[str, Any]:
            return status_body(await services.jobs.get(job.id), links)

        location = links.url(f"/status/{job.id}")
        return await created_answer(
            request, services, [job.id], answer=answer, view=view, location=location
        )

    @router.get("/status/{job_id}", summary="Check job status")
    async def status(
        job_id: str, request: Request, services: ServicesDep, caller: Caller, links: LinksDep
    ) -> dict[str, Any]:
        """Status (queued/processing/completed/error), progress 0-100, and the download URL.
        `?wait=N` (or `Prefer: wait=N`): answer once the status changes, or after N s."""
        job = await services.jobs.get(job_id, caller)
        return status_body(await status_answer(request, services, job), links)

    @router.get("/download/{job_id}", summary="Download the video", response_class=FileResponse)
    async def download(job_id: str, services: ServicesDep, caller: Caller) -> FileResponse:
        """The MP4 (HTTP Range supported). 409 with the current status while it is not ready."""
        job = await services.jobs.get(job_id, caller)
        if job.status is not JobStatus.COMPLETED:
            word = STATUS_WORDS[job.phase]
            detail = f" ({job.error})" if job.error else ""
            raise Conflict(
                f"Video not ready: job {job_id} is {word}{detail}",
                status=word,
                progress=int(job.progress),
            )
        return serve_file(await services.jobs.video_file(job), inline=False)

    @router.get("/jobs", summary="List jobs, newest first")
    async def list_jobs(
        services: ServicesDep,
        caller: Caller,
        links: LinksDep,
        limit: int = Query(100, ge=1, le=1000),
        offset: int = Query(0, ge=0, le=2**31),
    ) -> dict[str, Any]:
        """Jobs newest first, a page at a time (`limit`, `offset`); `total` counts them all."""
        jobs = await services.jobs.list(limit=limit, offset=offset, caller=caller)
        total = await services.jobs.count(caller=caller)
        return {
            "jobs": [status_body(j, links) for j in jobs],
            "total": total,
            "limit": limit,
            "offset": offset,
        }

    @router.delete("/jobs/{job_id}", summary="Delete a job")
    async def delete_job(job_id: str, services: ServicesDep, caller: Caller) -> dict[str, Any]:
        """Cancel the job if it is queued or running, then remove its files and record."""
        await services.jobs.delete(job_id, caller)
        return {"job_id": job_id, "deleted": True, "message": "Job deleted"}

    return router
