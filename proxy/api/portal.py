"""Seed 004, the World Model Portal's video API: single and batch inference, status, the batch
zip, videos by id, and the two websockets.

Statuses are the seed's words: pending, generating, processing (the proxy is storing the
output), complete, failed. A batch is processing until every job has finished, then complete,
failed (all failed) or partial. `gpu_id` is the position of the job's backend in the pool.
Request bodies are the default workflow's parameters under their own names.
"""

import asyncio
from collections.abc import AsyncGenerator, Callable
from contextlib import aclosing, suppress
from typing import Any

from fastapi import APIRouter, Request, WebSocket, WebSocketDisconnect
from fastapi.responses import FileResponse, StreamingResponse
from pydantic import BaseModel, Field

from proxy.api.auth import Caller
from proxy.api.callbacks import CALLBACK_FIELDS, CALLBACK_KEYS, with_callback, with_callbacks
from proxy.api.deps import BatchesDep, ServicesDep, job_limit, serve_file
from proxy.api.links import Links, LinksDep, request_base
from proxy.api.surface import Surface
from proxy.api.waiting import created_answer, requested_wait, status_answer
from proxy.batches import Batch, BatchService, ItemSpec, Tally
from proxy.errors import Conflict, InvalidInput, NotFound
from proxy.jobs.feed import FeedEvent, following
from proxy.jobs.models import Job, JobPhase
from proxy.services import Services
from proxy.workflows import WorkflowRegistry

SURFACE = Surface("portal")

# Websocket close code for an unknown job or batch (4000-4999 are the application's).
CLOSE_NOT_FOUND = 4404

STATUS_WORDS = {
    JobPhase.CREATED: "pending",
    JobPhase.WAITING: "pending",
    JobPhase.RETRYING: "generating",
    JobPhase.RUNNING: "generating",
    JobPhase.STORING: "processing",
    JobPhase.SUCCEEDED: "complete",
    JobPhase.FAILED: "failed",
    JobPhase.CANCELLED: "failed",
}
# The seed's batch words for Tally.outcome.
BATCH_WORDS = {
    "running": "processing",
    "completed": "complete",
    "failed": "failed",
    "partial": "partial",
}


def status_message(job: Job, word: str) -> str:
    if word == "complete":
        return "Video generation complete"
    if word == "failed":
        return job.error or job.message or "Video generation failed"
    if word == "generating" and not job.message:
        return "Generating video from prompt"
    return job.message or "Waiting for a GPU"


def job_status(job: Job, links: Links) -> dict[str, Any]:
    """The seed's single-video status object (with keys configured, plus `signed_url`)."""
    word = STATUS_WORDS[job.phase]
    path = f"/api/videos/{job.id}" if job.finished_video else None
    return {
        "job_id": job.id,
        "status": word,
        "message": status_message(job, word),
        "progress": 100 if word == "complete" else int(job.progress),
        "video_url": links.maybe(path),
        **links.signed(path, job.client_key),
    }


def deleted_status(job_id: str) -> dict[str, Any]:
    return {
        "job_id": job_id,
        "status": "failed",
        "message": "The job was deleted",
        "progress": 0,
        "video_url": None,
    }


def batch_job_status(
    services: Services, links: Links, job: Job | None, job_id: str, prompt: str
) -> dict[str, Any]:
    body = deleted_status(job_id) if job is None else job_status(job, links)
    backend = services.pool.get(job.backend) if job is not None else None
    body["gpu_id"] = backend.index if backend is not None else None
    body["prompt"] = prompt
    return body


def batch_status(
    services: Services, links: Links, batch: Batch, jobs: list[Job | None]
) -> dict[str, Any]:
    """The seed's batch status object; jobs in prompt order."""
    tally = Tally.of(jobs)
    return {
        "batch_id": batch.id,
        "status": BATCH_WORDS[tally.outcome],
        "total": tally.total,
        "completed": tally.completed,
        "failed": tally.failed,
        "message": f"Completed: {tally.completed}/{tally.total}",
        "jobs": [
            batch_job_status(services, links, job, item.job_id, item.prompt)
            for item, job in zip(batch.items, jobs, strict=True)
        ],
    }


# -- websockets -------------------------------------------------------------------------------


async def _until_closed(websocket: WebSocket) -> None:
    """Read (and ignore) what the client sends until it goes away."""
    while True:
        message = await websocket.receive()
        if message["type"] == "websocket.disconnect":
            return


async def _send_changes(
    websocket: WebSocket,
    statuses: AsyncGenerator[dict[str, Any]],
    finished: Callable[[dict[str, Any]], bool],
) -> None:
    current: dict[str, Any] | None = None
    async with aclosing(statuses):  # unsubscribes as soon as the last status is sent
        async for status in statuses:
            if status != current:
                current = status
                await websocket.send_json(status)
            if finished(status):
                break
    if current is not None and finished(current):
        await websocket.close(code=1000)


async def _serve(
    websocket: WebSocket,
    statuses: AsyncGenerator[dict[str, Any]],
    finished: Callable[[dict[str, Any]], bool],
) -> None:
    """Send each new status object until the last one is final (then close with 1000) or
    the client leaves, whichever comes first."""
    sender = asyncio.create_task(_send_changes(websocket, statuses, finished))
    receiver = asyncio.create_task(_until_closed(websocket))
    done, pending = await asyncio.wait({sender, receiver}, return_when=asyncio.FIRST_COMPLETED)
    for task in pending:
        task.cancel()
        with suppress(asyncio.CancelledError, WebSocketDisconnect):
            await task
    if sender in done:
        with suppress(WebSocketDisconnect):
            sender.result()


async def _not_found(websocket: WebSocket, what: str) -> None:
    await websocket.send_json({"error": f"no {what}", "status": "not_found"})
    await websocket.close(code=CLOSE_NOT_FOUND, reason=f"no {what}")


async def _video_statuses(
    services: Services, links: Links, job_id: str
) -> AsyncGenerator[dict[str, Any]]:
    async def snapshot() -> list[Job]:
        try:
            return [await services.jobs.get(job_id)]
        except NotFound:
            return []  # deleted meanwhile

    def status(event: FeedEvent) -> dict[str, Any]:
        return deleted_status(job_id) if event.kind == "deleted" else job_status(event.job, links)

    async with following(services.bus, select=lambda j: j.id == job_id, snapshot=snapshot) as feed:
        if not feed.initial:
            yield deleted_status(job_id)
            return
        for event in feed.initial:
            yield status(event)
        async for event in feed.changes:
            yield status(event)


async def _batch_statuses(
    services: Services, links: Links, batches: BatchService, batch_id: str
) -> AsyncGenerator[dict[str, Any]]:
    # This socket's view of the batch's jobs (None: deleted), folded from the feed.
    jobs: dict[str, Job | None] = {}

    async def snapshot() -> list[Job]:
        batch = await batches.store.get_batch(batch_id)
        current = await batches.jobs_of(batch) if batch is not None else []
        return [job for job in current if job is not None]

    async def status() -> dict[str, Any]:
        # The item list changes when a scene is regenerated: read it every time.
        batch = await batches.store.get_batch(batch_id)
        if batch is None:
            return {"batch_id": batch_id, "status": "not_found", "message": "The batch was deleted"}
        unknown = [job_id for job_id in batch.job_ids if job_id not in jobs]
        if unknown:
            fresh = {j.id: j for j in await batches.jobs_of(batch) if j is not None}
            for job_id in unknown:
                jobs[job_id] = fresh.get(job_id)
        return batch_status(services, links, batch, [jobs.get(job_id) for job_id in batch.job_ids])

    async with following(
        services.bus, select=lambda j: j.batch_id == batch_id, snapshot=snapshot
    ) as feed:
        for event in feed.initial:
            jobs[event.job.id] = event.job
        yield await status()
        async for event in feed.changes:
            jobs[event.job.id] = None if event.kind == "deleted" else event.job
            yield await status()


def build(registry: WorkflowRegistry, default_workflow: str, max_batch_size: int) -> APIRouter:
    router = APIRouter(prefix="/api", tags=["World Model Portal (seed 004)"])
    flow = registry.get(default_workflow)
    single_inference_body: type[BaseModel] = SURFACE.model(
        flow,
        "SingleInference",
        doc="One video: its prompt and any workflow parameter (omitted: the defaults).",
        fields=CALLBACK_FIELDS,
    )
    batch_inference_body: type[BaseModel] = SURFACE.model(
        flow,
        "BatchInference",
        doc="One video per prompt, all with the same parameters (omitted: the defaults).",
        exclude=("prompt",),
        fields={
            "prompts": (
                list[str],
                Field(description=f"1 to {max_batch_size} prompts (MAX_BATCH_SIZE)"),
            ),
            **CALLBACK_FIELDS,
        },
    )

    @router.post("/video/single_inference", summary="Generate a single video")
    async def single_inference(
        body: single_inference_body,  # type: ignore[valid-type]
        request: Request,
        services: ServicesDep,
        caller: Caller,
        links: LinksDep,
    ) -> Any:
        """Queue one text-to-video job; follow it on `/api/video/status/{job_id}` or the
        websocket. `Prefer: wait=N` (or `?wait=N`): its status once done (200) or after N s
        (202)."""
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
            "message": "Video generation started. Connect to WebSocket for updates.",
        }

        async def view() -> dict[str, Any]:
            return job_status(await services.jobs.get(job.id), links)

        return await created_answer(
            request,
            services,
            [job.id],
            answer=answer,
            view=view,
            location=links.url(f"/api/video/status/{job.id}"),
        )

    @router.get("/video/status/{job_id}", summary="Status of a single video")
    async def video_status(
        job_id: str, request: Request, services: ServicesDep, caller: Caller, links: LinksDep
    ) -> dict[str, Any]:
        """pending, generating, processing, complete or failed, with progress 0-100.
        `?wait=N` (or `Prefer: wait=N`): answer once the status changes, or after N s."""
        job = await services.jobs.get(job_id, caller)
        return job_status(await status_answer(request, services, job), links)

    @router.post("/video/batch_inference", summary="Generate several videos in parallel")
    async def batch_inference(
        body: batch_inference_body,  # type: ignore[valid-type]
        request: Request,
        services: ServicesDep,
        batches: BatchesDep,
        caller: Caller,
        links: LinksDep,
    ) -> Any:
        """One job per prompt, spread over the GPUs (one ComfyUI backend each). `Prefer:
        wait=N` (or `?wait=N`): the batch status once every job has ended (200), or after
        N s (202)."""
        requested_wait(request, services.settings.max_wait_s)
        prompts: list[str] = body.prompts  # type: ignore[attr-defined]
        count = len(prompts)
        if not 1 <= count <= max_batch_size:
            raise InvalidInput("prompts", f"give 1 to {max_batch_size} prompts (got {count})")
        for index, prompt in enumerate(prompts):
            if not prompt.strip():
                raise InvalidInput(f"prompts.{index}", "the prompt is empty")
        with SURFACE.errors():
            batch, _ = await with_callbacks(
                services,
                links,
                body,
                lambda: batches.create(
                    "portal",
                    [
                        ItemSpec(prompt=p, label=f"prompt {i + 1} of {count}")
                        for i, p in enumerate(prompts)
                    ],
                    SURFACE.values(body, skip=("prompts", *CALLBACK_KEYS)),
                    surface=SURFACE.name,
                    client_key=caller.owner,
                    max_active=job_limit(services),
                ),
                lambda made: [item.job_id for item in made[0].items],
            )
        answer = {
            "batch_id": batch.id,
            "message": f"Batch processing started for {count} prompts. "
            "Connect to WebSocket for updates.",
        }

        async def view() -> dict[str, Any]:
            return batch_status(services, links, batch, await batches.jobs_of(batch))

        return await created_answer(
            request,
            services,
            [item.job_id for item in batch.items],
            answer=answer,
            view=view,
            location=links.url(f"/api/video/batch_status/{batch.id}"),
        )

    @router.get("/video/batch_status/{batch_id}", summary="Status of every video of a batch")
    async def get_batch_status(
        batch_id: str,
        services: ServicesDep,
        batches: BatchesDep,
        caller: Caller,
        links: LinksDep,
    ) -> dict[str, Any]:
        """processing, complete, partial or failed; 404 with status not_found for unknown ids."""
        batch = await batches.get(batch_id, caller)
        return batch_status(services, links, batch, await batches.jobs_of(batch))

    @router.get(
        "/video/batch_download/{batch_id}",
        summary="Download a batch's finished videos as a ZIP",
        response_class=StreamingResponse,
        responses={200: {"content": {"application/zip": {}}}},
    )
    async def batch_download(
        batch_id: str, batches: BatchesDep, caller: Caller
    ) -> StreamingResponse:
        """Every finished video, in prompt order, as `job_<n>_<job_id>.mp4`; streamed as it is
        written (no compression: MP4 does not shrink). 409 while no video has finished."""
        batch, tally, plan = await batches.zip_plan(batch_id, caller)
        if plan is None:
            raise Conflict(
                f"no video of batch {batch_id} has finished yet",
                status=BATCH_WORDS[tally.outcome],
                completed=tally.completed,
                total=tally.total,
            )
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
    async def get_video(
        video_id: str, services: ServicesDep, batches: BatchesDep, caller: Caller
    ) -> FileResponse:
        """The MP4 of a finished job (by its id) or a stored output (by its file name), with
        HTTP Range. 409 while the job is still running."""
        try:
            job = await services.jobs.get(video_id, caller)
        except NotFound:
            try:
                return serve_file(await batches.stored_output(video_id, caller))
            except NotFound:
                raise NotFound(f"no video with id or file name {video_id[:80]!r}") from None
        return serve_file(await services.jobs.video_file(job))

    @router.websocket("/ws/video/{job_id}")
    async def ws_video(
        websocket: WebSocket, job_id: str, services: ServicesDep, caller: Caller
    ) -> None:
        """The single-video status object at once and on every change; closes (1000) when
        the job has finished, or with 4404 for an unknown id."""
        await websocket.accept()
        try:
            job = await services.jobs.get(job_id, caller)
        except NotFound:
            await _not_found(websocket, f"job with id {job_id!r}")
            return
        await _serve(
            websocket,
            _video_statuses(services, Links(request_base(websocket)), job.id),
            lambda s: s["status"] in ("complete", "failed"),
        )

    @router.websocket("/ws/batch/{batch_id}")
    async def ws_batch(
        websocket: WebSocket,
        batch_id: str,
        services: ServicesDep,
        batches: BatchesDep,
        caller: Caller,
    ) -> None:
        """The batch status object at once and on every change of one of its jobs; closes
        (1000) when every job has finished, or with 4404 for an unknown id."""
        await websocket.accept()
        try:
            batch = await batches.get(batch_id, caller)
        except NotFound:
            await _not_found(websocket, f"batch with id {batch_id!r}")
            return
        await _serve(
            websocket,
            _batch_statuses(services, Links(request_base(websocket)), batches, batch.id),
            lambda s: s["status"] != "processing",
        )

    return router
