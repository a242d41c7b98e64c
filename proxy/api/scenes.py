"""Seed 003, scene videos: sessions holding named scene descriptions, generating every scene
in parallel, per-scene status, regenerating one scene, and (beyond the seed) the finished
scenes joined into one video.

The seed's `job_id` is a batch id: one job per scene. Scene statuses are generating,
completed and failed; the overall status is generating while any scene is, then completed,
failed (all failed) or partial. Video URLs are `/outputs/<file>`.
"""

from typing import Any, cast

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse, JSONResponse
from pydantic import Field, field_validator

from proxy.api.auth import Caller
from proxy.api.callbacks import CALLBACK_FIELDS, WebhookEvents, with_callbacks
from proxy.api.deps import BatchesDep, ServicesDep, job_limit, serve_file
from proxy.api.links import Links, LinksDep
from proxy.api.surface import CleanText, Surface, SurfaceBody
from proxy.api.waiting import created_answer, requested_wait
from proxy.batches import Batch, BatchService, Scene, SceneSession, Tally, output_url
from proxy.jobs.models import Job, JobPhase
from proxy.workflows import WorkflowRegistry

SURFACE = Surface("scenes")

SCENE_WORDS = {
    JobPhase.CREATED: "generating",
    JobPhase.WAITING: "generating",
    JobPhase.RETRYING: "generating",
    JobPhase.RUNNING: "generating",
    JobPhase.STORING: "generating",
    JobPhase.SUCCEEDED: "completed",
    JobPhase.FAILED: "failed",
    JobPhase.CANCELLED: "failed",
}

DEFAULT_REGENERATE_TIMEOUT_S = 600.0


class SceneIn(CleanText):
    scenario: str = Field(
        min_length=1, max_length=40, description="The scene's name: hook, cta, ..."
    )
    description: str = Field(min_length=1, description="The scene's video prompt")


class SessionBase(SurfaceBody):
    """Scenes as `{scenario: description}` or `[{scenario, description}]`, in order, and the
    workflow parameters every scene shares (omitted: the workflow's defaults)."""

    scenes: dict[str, str] | list[SceneIn] = Field(default_factory=list)
    params: dict[str, Any] = Field(default_factory=dict, description="Any other workflow parameter")

    def scene_list(self) -> list[Scene]:
        if isinstance(self.scenes, dict):
            return [Scene(scenario=k, description=v) for k, v in self.scenes.items()]
        return [Scene(scenario=s.scenario, description=s.description) for s in self.scenes]

    def shared(self) -> dict[str, Any]:
        return {**self.params, **SURFACE.values(self, skip=("scenes", "params"))}


class GenerateScenes(CleanText):
    session_id: str = Field(min_length=1)
    webhook_url: str | None = CALLBACK_FIELDS["webhook_url"][1]
    webhook_events: WebhookEvents = CALLBACK_FIELDS["webhook_events"][1]


class RegenerateScene(CleanText):
    session_id: str = Field(min_length=1)
    webhook_url: str | None = CALLBACK_FIELDS["webhook_url"][1]
    webhook_events: WebhookEvents = CALLBACK_FIELDS["webhook_events"][1]
    scenario: str = Field(min_length=1)
    wait: bool = Field(True, description="Answer once the video is ready (bounded by timeout_s)")
    timeout_s: float = Field(DEFAULT_REGENERATE_TIMEOUT_S, gt=0, le=3600)

    @field_validator("scenario")
    @classmethod
    def _strip(cls, value: str) -> str:
        return value.strip()


def session_body(session: SceneSession, links: Links) -> dict[str, Any]:
    return {
        "session_id": session.id,
        "scenes": [s.model_dump() for s in session.scenes],
        "params": session.params,
        "job_id": session.batch_id,
        "scene_videos": [
            v.model_dump() | {"video_url": links.url(v.video_url)} for v in session.scene_videos
        ],
        "created_at": session.created_at.isoformat(),
        "updated_at": session.updated_at.isoformat(),
    }


def scene_word(job: Job | None) -> str:
    return "failed" if job is None else SCENE_WORDS[job.phase]


def overall_word(tally: Tally) -> str:
    """The seed's overall_status: generating until every scene has finished."""
    return "generating" if tally.outcome == "running" else tally.outcome


def scene_status(scenario: str, job: Job | None, links: Links) -> dict[str, Any]:
    word = scene_word(job)
    error = None
    if word == "failed":
        error = "the job was deleted" if job is None else (job.error or job.message or "failed")
    return {
        "scenario": scenario,
        "status": word,
        "progress": 0 if job is None else (100 if word == "completed" else int(job.progress)),
        "video_url": links.maybe(output_url(job) if job is not None else None),
        "error": error,
        "job_id": job.id if job is not None else None,
        **links.signed(output_url(job) if job else None, job.client_key if job else None),
    }


def build(registry: WorkflowRegistry, default_workflow: str) -> APIRouter:
    router = APIRouter(prefix="/api", tags=["Scene videos (seed 003)"])
    create_session_body: type[SessionBase] = SURFACE.model(  # type: ignore[assignment]
        registry.get(default_workflow),
        "CreateSession",
        doc=SessionBase.__doc__ or "",
        exclude=("prompt",),
        base=SessionBase,
    )

    @router.post("/session", status_code=201, summary="Create a scene session")
    async def create_session(
        body: create_session_body,  # type: ignore[valid-type]
        batches: BatchesDep,
        caller: Caller,
        links: LinksDep,
    ) -> dict[str, Any]:
        """Stores named scene descriptions (in order) and the parameters every scene uses."""
        with SURFACE.errors():
            data = cast(SessionBase, body)
            session = await batches.create_session(data.scene_list(), data.shared(), caller)
        return session_body(session, links)

    @router.get("/session/{session_id}", summary="A scene session and its videos")
    async def get_session(
        session_id: str, batches: BatchesDep, caller: Caller, links: LinksDep
    ) -> dict[str, Any]:
        """The scenes, and `scene_videos` once the last generation has finished."""
        return session_body(await batches.get_session(session_id, caller), links)

    @router.post("/videos/generate-scenes", summary="Generate every scene of a session in parallel")
    async def generate_scenes(
        body: GenerateScenes,
        request: Request,
        services: ServicesDep,
        batches: BatchesDep,
        caller: Caller,
        links: LinksDep,
    ) -> Any:
        """One job per scene, spread over the GPUs; follow it on `/api/videos/status/{job_id}`.
        `Prefer: wait=N` (or `?wait=N`): that status once every scene has ended (200), or
        after N s (202)."""
        requested_wait(request, services.settings.max_wait_s)
        batch = await with_callbacks(
            services,
            links,
            body,
            lambda: batches.generate_scenes(
                body.session_id, caller, max_active=job_limit(services)
            ),
            lambda batch: [item.job_id for item in batch.items],
        )
        answer = {
            "success": True,
            "message": f"Video generation started for {len(batch.items)} scenes",
            "job_id": batch.id,
        }

        async def view() -> dict[str, Any]:
            return await generation_status(batches, batch, links)

        return await created_answer(
            request,
            services,
            [item.job_id for item in batch.items],
            answer=answer,
            view=view,
            location=links.url(f"/api/videos/status/{batch.id}"),
        )

    @router.get("/videos/status/{job_id}", summary="Status of every scene of a generation")
    async def scenes_status(
        job_id: str, batches: BatchesDep, caller: Caller, links: LinksDep
    ) -> dict[str, Any]:
        """overall_status generating, completed, failed or partial; one entry per scene."""
        return await generation_status(batches, await batches.get(job_id, caller), links)

    async def generation_status(
        batches: BatchService, batch: Batch, links: Links
    ) -> dict[str, Any]:
        jobs = await batches.jobs_of(batch)
        await batches.sync_session(batch, jobs)
        tally = Tally.of(jobs)
        overall = overall_word(tally)
        final = f"/api/videos/final/{batch.id}" if overall in ("completed", "partial") else None
        return {
            "job_id": batch.id,
            "session_id": batch.session_id,
            "overall_status": overall,
            "scenes": [
                scene_status(item.label or str(i), job, links)
                for i, (item, job) in enumerate(zip(batch.items, jobs, strict=True))
            ],
            "final_video_url": links.maybe(final),
            **links.signed(final, batch.client_key, prefix="final_video_"),
        }

    @router.post(
        "/videos/regenerate-scene",
        summary="Regenerate one scene",
        responses={
            202: {"description": "Still generating when `timeout_s` ran out, or wait=false"},
            502: {"description": "The new video failed"},
        },
    )
    async def regenerate_scene(
        body: RegenerateScene,
        services: ServicesDep,
        batches: BatchesDep,
        caller: Caller,
        links: LinksDep,
    ) -> Any:
        """A new video for one scene from its description, in the scene's place. Waits for it
        (up to `timeout_s`) unless `wait` is false; a 202 then carries the job id to follow."""
        batch, job = await with_callbacks(
            services,
            links,
            body,
            lambda: batches.regenerate_scene(
                body.session_id, body.scenario, caller, max_active=job_limit(services)
            ),
            lambda created: [created[1].id],
        )
        pending = {
            "success": True,
            "message": f"Video regeneration started for {body.scenario}",
            "scenario": body.scenario,
            "job_id": batch.id,
            "scene_job_id": job.id,
            "video_url": None,
            "status_url": links.url(f"/api/videos/status/{batch.id}"),
        }
        if not body.wait:
            return JSONResponse(pending, status_code=202)
        try:
            job = await batches.jobs.wait(job.id, lambda j: j.status.finished, body.timeout_s)
        except TimeoutError:
            pending["message"] = (
                f"Video regeneration for {body.scenario} is still running "
                f"after {body.timeout_s:g} s"
            )
            return JSONResponse(pending, status_code=202)
        if job.phase is not JobPhase.SUCCEEDED:
            error = job.error or job.message or "the job did not complete"
            return JSONResponse(
                {
                    "success": False,
                    "error": f"Video regeneration failed for {body.scenario}: {error}",
                    "message": f"Video regeneration failed for {body.scenario}: {error}",
                    "scenario": body.scenario,
                    "job_id": batch.id,
                    "scene_job_id": job.id,
                    "video_url": None,
                },
                status_code=502,
            )
        return {
            "success": True,
            "message": f"Video regenerated successfully for {body.scenario}",
            "video_url": links.maybe(output_url(job)),
            **links.signed(output_url(job), job.client_key),
            "scenario": body.scenario,
            "job_id": batch.id,
            "scene_job_id": job.id,
        }

    @router.get(
        "/videos/final/{job_id}",
        summary="The finished scenes joined into one video",
        response_class=FileResponse,
    )
    async def final_video(job_id: str, batches: BatchesDep, caller: Caller) -> FileResponse:
        """Every completed scene in scene order, as one MP4 (HTTP Range supported). Built once per
        set of finished scenes; 409 while a scene is still generating."""
        stored, _ = await batches.final_video(job_id, caller)
        return serve_file(stored)

    return router
