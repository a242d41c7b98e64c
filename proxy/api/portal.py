"""Seed 004, the World Model Portal's video API: single and batch inference, status, the batch
zip, videos by id, and the two websockets.

Statuses are the seed's words: pending, generating, processing (the proxy is storing the
output), complete, failed. A batch is processing until every job has finished, then complete,
failed (all failed) or partial. `gpu_id` is the position of the job's backend in the pool.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from contextlib import suppress
from typing import Any

import anyio
from fastapi import APIRouter, Request, WebSocket, WebSocketDisconnect
from fastapi.responses import FileResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from proxy.api.batches import BatchesDep, ServicesDep
from proxy.api.deps import client_key, file_response, video_response
from proxy.batches import Batch, BatchService, ItemSpec, Tally
from proxy.errors import Conflict, InvalidInput, NotFound
from proxy.jobs.bus import JobEvent
from proxy.jobs.models import Job, JobStatus
from proxy.media.probe import content_type_of
from proxy.media.zipstream import ZipEntry, plan_zip
from proxy.services import Services

log = logging.getLogger("proxy.api.portal")

router = APIRouter(prefix="/api", tags=["World Model Portal (seed 004)"])

# Websocket close code for an unknown job or batch (4000-4999 are the application's).
CLOSE_NOT_FOUND = 4404


class VideoParams(BaseModel):
    """Optional FastWAN parameters (omitted: the workflow's defaults)."""

    model_config = ConfigDict(extra="forbid")

    negative_prompt: str | None = None
    seed: int | None = None
    steps: int | None = None
    cfg: float | None = None
    width: int | None = Field(None, description="A multiple of 32 (default 1280)")
    height: int | None = Field(None, description="A multiple of 32 (default 704)")
    length: int | None = Field(None, description="Frames, 4k+1 (default 121)")
    fps: int | None = None

    def values(self) -> dict[str, Any]:
        return self.model_dump(exclude={"prompt", "prompts"}, exclude_none=True)


class SingleInference(VideoParams):
    prompt: str = Field(min_length=1, description="What the video shows")


class BatchInference(VideoParams):
    prompts: list[str] = Field(description="1 to MAX_BATCH_SIZE (default 8) prompts")


# -- the seed's status objects --------------------------------------------------------------


def status_word(job: Job) -> str:
    if job.status is JobStatus.COMPLETED:
        return "complete"
    if job.status in (JobStatus.FAILED, JobStatus.CANCELLED):
        return "failed"
    if job.status is JobStatus.RUNNING:
        return "processing" if job.stage == "storing output" else "generating"
    # A job retried after its backend went away is still being generated, not new.
    if job.status is JobStatus.QUEUED and (job.retries or job.started_at is not None):
        return "generating"
    return "pending"


def status_message(job: Job, word: str) -> str:
    if word == "complete":
        return "Video generation complete"
    if word == "failed":
        return job.error or job.message or "Video generation failed"
    if word == "generating" and not job.message:
        return "Generating video from prompt"
    return job.message or "Waiting for a GPU"


def job_status(job: Job) -> dict[str, Any]:
    """The seed's single-video status object."""
    word = status_word(job)
    return {
        "job_id": job.id,
        "status": word,
        "message": status_message(job, word),
        "progress": 100 if word == "complete" else int(job.progress),
        "video_url": f"/api/videos/{job.id}" if word == "complete" and job.video else None,
    }


def batch_job_status(
    services: Services, job: Job | None, job_id: str, prompt: str
) -> dict[str, Any]:
    if job is None:
        body: dict[str, Any] = {
            "job_id": job_id,
            "status": "failed",
            "message": "The job was deleted",
            "progress": 0,
            "video_url": None,
        }
        backend = None
    else:
        body = job_status(job)
        backend = services.pool.get(job.backend)
    body["gpu_id"] = backend.index if backend is not None else None
    body["prompt"] = prompt
    return body


# The seed's batch words for Tally.outcome.
BATCH_WORDS = {
    "running": "processing",
    "completed": "complete",
    "failed": "failed",
    "partial": "partial",
}


def batch_word(tally: Tally) -> str:
    return BATCH_WORDS[tally.outcome]


def batch_status(services: Services, batch: Batch, jobs: list[Job | None]) -> dict[str, Any]:
    """The seed's batch status object; jobs in prompt order."""
    tally = Tally.of(jobs)
    return {
        "batch_id": batch.id,
        "status": batch_word(tally),
        "total": tally.total,
        "completed": tally.completed,
        "failed": tally.failed,
        "message": f"Completed: {tally.completed}/{tally.total}",
        "jobs": [
            batch_job_status(services, job, item.job_id, item.prompt)
            for item, job in zip(batch.items, jobs, strict=True)
        ],
    }


# -- HTTP ------------------------------------------------------------------------------------


@router.post("/video/single_inference", summary="Generate a single video")
async def single_inference(
    body: SingleInference, request: Request, services: ServicesDep
) -> dict[str, Any]:
    """Queue one text-to-video job; follow it on `/api/video/status/{job_id}` or the websocket."""
    job = await services.jobs.create(
        services.settings.default_workflow,
        {**body.values(), "prompt": body.prompt},
        surface="portal",
        client_key=client_key(request),
    )
    return {
        "job_id": job.id,
        "message": "Video generation started. Connect to WebSocket for updates.",
    }


@router.get("/video/status/{job_id}", summary="Status of a single video")
async def video_status(job_id: str, services: ServicesDep) -> dict[str, Any]:
    """pending, generating, processing, complete or failed, with progress 0-100."""
    return job_status(await services.jobs.get(job_id))


@router.post("/video/batch_inference", summary="Generate several videos in parallel")
async def batch_inference(
    body: BatchInference,
    request: Request,
    services: ServicesDep,
    batches: BatchesDep,
) -> dict[str, Any]:
    """One job per prompt, spread over the GPUs (one ComfyUI backend each)."""
    limit = services.settings.max_batch_size
    count = len(body.prompts)
    if not 1 <= count <= limit:
        raise InvalidInput("prompts", f"give 1 to {limit} prompts (got {count})")
    for index, prompt in enumerate(body.prompts):
        if not prompt.strip():
            raise InvalidInput(f"prompts.{index}", "the prompt is empty")
    n = len(body.prompts)
    batch, _ = await batches.create(
        "portal",
        [ItemSpec(prompt=p, label=f"prompt {i + 1} of {n}") for i, p in enumerate(body.prompts)],
        body.values(),
        surface="portal",
        client_key=client_key(request),
    )
    return {
        "batch_id": batch.id,
        "message": f"Batch processing started for {n} prompts. Connect to WebSocket for updates.",
    }


@router.get("/video/batch_status/{batch_id}", summary="Status of every video of a batch")
async def get_batch_status(
    batch_id: str,
    services: ServicesDep,
    batches: BatchesDep,
) -> dict[str, Any]:
    """processing, complete, partial or failed; 404 with status not_found for unknown ids."""
    batch = await batches.get(batch_id)
    return batch_status(services, batch, await batches.jobs_of(batch))


@router.get(
    "/video/batch_download/{batch_id}",
    summary="Download a batch's finished videos as a ZIP",
    response_class=StreamingResponse,
    responses={200: {"content": {"application/zip": {}}}},
)
async def batch_download(
    batch_id: str,
    services: ServicesDep,
    batches: BatchesDep,
) -> StreamingResponse:
    """Every finished video, in prompt order, as `job_<n>_<job_id>.mp4`; streamed as it is
    written (no compression: MP4 does not shrink). 409 while no video has finished."""
    batch = await batches.get(batch_id)
    jobs = await batches.jobs_of(batch)
    entries = []
    for index, job in enumerate(jobs):
        if job is None or job.status is not JobStatus.COMPLETED or job.video is None:
            continue
        try:
            output = await services.outputs.existing(job)
        except NotFound as exc:  # one lost file must not hold back the others
            log.warning("batch %s: %s; left out of the zip", batch_id, exc.message)
            continue
        path = services.outputs.path_for(output.filename)
        entries.append(ZipEntry(f"job_{index}_{job.id}.mp4", path))
    if not entries:
        tally = Tally.of(jobs)
        raise Conflict(
            f"no video of batch {batch_id} has finished yet",
            status=batch_word(tally),
            completed=tally.completed,
            total=tally.total,
        )
    plan = await plan_zip(entries)
    return StreamingResponse(
        plan.stream(),
        media_type="application/zip",
        headers={
            "Content-Length": str(plan.size),
            "Content-Disposition": f'attachment; filename="batch_{batch.id}.zip"',
        },
    )


@router.get(
    "/videos/{video_id}", summary="A video by job id or file name", response_class=FileResponse
)
async def get_video(video_id: str, services: ServicesDep) -> FileResponse:
    """The MP4 of a finished job (by its id) or a stored output (by its file name), with
    HTTP Range. 409 while the job is still running."""
    try:
        job = await services.jobs.get(video_id)
    except NotFound:
        job = None
    if job is not None:
        return await video_response(services, job, inline=True)
    path = services.outputs.path_for(video_id)
    if not await anyio.Path(path).is_file():
        raise NotFound(f"no video with id or file name {video_id!r}")
    return file_response(path, content_type_of(path), inline=True)


# -- websockets -------------------------------------------------------------------------------


async def _until_closed(websocket: WebSocket) -> None:
    """Read (and ignore) what the client sends until it goes away."""
    while True:
        message = await websocket.receive()
        if message["type"] == "websocket.disconnect":
            return


async def _follow(
    websocket: WebSocket,
    services: Services,
    snapshot: Callable[[], Awaitable[dict[str, Any] | None]],
    apply: Callable[[JobEvent], Awaitable[dict[str, Any] | None]],
    finished: Callable[[dict[str, Any]], bool],
    what: str,
) -> None:
    """Send the current status, then every change, and close with 1000 once it is final.

    `snapshot` reads the current status (None: unknown id); `apply` folds one bus event in
    and returns the new status, or None when the event does not concern this socket.
    """
    await websocket.accept()
    async with services.bus.subscribe() as queue:
        # Read only once subscribed, so no change falls between the read and the stream.
        current = await snapshot()
        if current is None:
            await websocket.send_json({"error": f"no {what}", "status": "not_found"})
            await websocket.close(code=CLOSE_NOT_FOUND, reason=f"no {what}")
            return
        receiver = asyncio.create_task(_until_closed(websocket))
        try:
            await websocket.send_json(current)
            while not finished(current):
                getter = asyncio.create_task(queue.get())
                done, _ = await asyncio.wait(
                    {getter, receiver}, return_when=asyncio.FIRST_COMPLETED
                )
                if getter not in done:
                    getter.cancel()
                    return  # the client left
                status = await apply(getter.result())
                if status is not None and status != current:
                    current = status
                    await websocket.send_json(current)
        except WebSocketDisconnect:
            return
        finally:
            receiver.cancel()
            with suppress(asyncio.CancelledError, WebSocketDisconnect):
                await receiver
        await websocket.close(code=1000)


def _newer(event_job: Job, known: Job | None) -> bool:
    """An event read before our snapshot must not take a job back to an older state."""
    return known is None or event_job.updated_at >= known.updated_at


@router.websocket("/ws/video/{job_id}")
async def ws_video(websocket: WebSocket, job_id: str) -> None:
    """The single-video status object at once and on every change; closes (1000) when the
    job has finished, or with 4404 for an unknown id."""
    services: Services = websocket.app.state.services
    state: dict[str, Job] = {}

    async def snapshot() -> dict[str, Any] | None:
        try:
            state["job"] = await services.jobs.get(job_id)
        except NotFound:
            return None
        return job_status(state["job"])

    async def apply(event: JobEvent) -> dict[str, Any] | None:
        if event.job.id != job_id or not _newer(event.job, state.get("job")):
            return None
        if event.kind == "deleted":
            gone = event.job.model_copy(
                update={"status": JobStatus.CANCELLED, "message": "The job was deleted"}
            )
            return job_status(gone)
        state["job"] = event.job
        return job_status(event.job)

    await _follow(
        websocket,
        services,
        snapshot,
        apply,
        lambda s: s["status"] in ("complete", "failed"),
        f"job with id {job_id!r}",
    )


@router.websocket("/ws/batch/{batch_id}")
async def ws_batch(websocket: WebSocket, batch_id: str) -> None:
    """The batch status object at once and on every change of one of its jobs; closes (1000)
    when every job has finished, or with 4404 for an unknown id."""
    services: Services = websocket.app.state.services
    batches: BatchService | None = services.extras.get("batches")
    jobs: dict[str, Job | None] = {}

    async def current() -> dict[str, Any] | None:
        assert batches is not None
        batch = await batches.store.get_batch(batch_id)
        if batch is None:
            return None
        missing = [job_id for job_id in batch.job_ids if job_id not in jobs]
        if missing:
            fresh = {j.id: j for j in await batches.jobs_of(batch)}
            for job_id in missing:
                jobs[job_id] = fresh.get(job_id)
        return batch_status(services, batch, [jobs.get(job_id) for job_id in batch.job_ids])

    async def snapshot() -> dict[str, Any] | None:
        return None if batches is None else await current()

    async def apply(event: JobEvent) -> dict[str, Any] | None:
        job = event.job
        known = job.id in jobs
        if not known and job.batch_id != batch_id:
            return None
        if event.kind == "deleted":
            jobs[job.id] = None
        elif _newer(job, jobs.get(job.id)):
            jobs[job.id] = job
        # The item list changes when a scene is regenerated: read it again.
        status = await current()
        if status is None:
            return {"batch_id": batch_id, "status": "not_found", "message": "The batch was deleted"}
        return status

    await _follow(
        websocket,
        services,
        snapshot,
        apply,
        lambda s: s["status"] != "processing",
        f"batch with id {batch_id!r}",
    )
