"""Seed 002, the Wan2.1 Video Server API: `/health`, `/api/v1/model/info`,
`/api/v1/generate/{text,image,video}-to-video`, `/api/v1/job/{id}`, `/api/v1/models`,
`/api/v1/models/download` and `/outputs/{file}`.

The seed's vocabulary, on the shared jobs:
- statuses: pending (waiting for a GPU), processing, completed, failed (cancelled is failed);
- every error is `{"error": "..."}`: 400 for bad input (never 422; the message names the
  field), 429 past `max_active_jobs_per_client` (with Retry-After), 503 when no ComfyUI
  backend is reachable, 500 for anything unexpected;
- `seed: -1` means "draw one at random" (the drawn seed is stored on the job and returned);
- the request fields are the workflows' own (types, ranges, descriptions) under the seed's
  names: `num_frames` is `length`, `guidance_scale` is `cfg`, `num_inference_steps` is `steps`.
  The seed's own defaults for those two (7.5 and 50) suit a 50-step model, not FastWAN
  (distilled for 8 steps at cfg 1: they would make a 6x slower, over-guided video), so an
  omitted one takes the workflow's default; values sent are honoured, and one far from the
  model's regime is noted in the job message.

Frame counts: Wan's VAE makes 4k+1 frames (1, 5, ... 61, ... 125). Elsewhere a count that is
not 4k+1 is refused, but the seed's own default (64) is not one, so on this surface only
`num_frames` N becomes the largest 4k+1 not above N (64 → 61, 128 → 125); the response says
so. Video-to-video keeps the source's frames, capped at `num_frames` (default 121, 5 s at
24 fps) and rounded down to 4k+1.
"""

import logging
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, cast

from fastapi import APIRouter, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse
from pydantic import BaseModel, Field, ValidationError

from proxy import __version__
from proxy.api.auth import Admin, Caller
from proxy.api.callbacks import CALLBACK_FIELDS, CALLBACK_KEYS, with_callback
from proxy.api.deps import (
    DownloadsDep,
    PresenceDep,
    ServicesDep,
    ServiceUnavailable,
    serve_file,
)
from proxy.api.errors import SeedRoute
from proxy.api.health import run_problems
from proxy.api.links import Links, LinksDep
from proxy.api.surface import Surface, SurfaceBody
from proxy.api.waiting import created_answer, requested_wait, status_answer
from proxy.auth import Principal
from proxy.errors import InvalidInput
from proxy.jobs.models import Job, JobPhase
from proxy.media.uploads import MediaKind
from proxy.services import Services
from proxy.workflows import Workflow, WorkflowRegistry
from proxy.workflows.registry import frames_4k1

log = logging.getLogger("proxy.api.wan21")

SURFACE = Surface(
    "wan21",
    {"num_frames": "length", "guidance_scale": "cfg", "num_inference_steps": "steps"},
)
SEED_MAX = 2**64 - 1
T2V, I2V, V2V = "fastwan_t2v", "fastwan_i2v", "fastwan_v2v"
# The seed's documented size and frame count (they suit the model; smaller is faster).
SEED_DEFAULTS = {"width": 512, "height": 512}
SEED_FRAMES = 64

STATUS_WORDS = {
    JobPhase.CREATED: "pending",
    JobPhase.WAITING: "pending",
    JobPhase.RETRYING: "pending",
    JobPhase.RUNNING: "processing",
    JobPhase.STORING: "processing",
    JobPhase.SUCCEEDED: "completed",
    JobPhase.FAILED: "failed",
    JobPhase.CANCELLED: "failed",
}


# -- request bodies -------------------------------------------------------------------------

SEED_FIELD = (
    int,
    Field(-1, ge=-1, le=SEED_MAX, description="Random seed (-1: drawn at random and returned)"),
)


def _form_schema(model: type[BaseModel], file_field: str, description: str) -> dict[str, Any]:
    schema = model.model_json_schema()
    schema["properties"] = {
        file_field: {"type": "string", "format": "binary", "description": description},
        **schema["properties"],
    }
    schema["required"] = [file_field, *schema.get("required", [])]
    return {
        "requestBody": {"required": True, "content": {"multipart/form-data": {"schema": schema}}}
    }


def _parse_form(model: type[BaseModel], fields: dict[str, str]) -> BaseModel:
    # A blank form field (`-F seed=`) means "not given", as it does for most form clients.
    given = {k: v for k, v in fields.items() if v.strip() or k in ("prompt", "negative_prompt")}
    try:
        return model.model_validate(given)
    except ValidationError as exc:
        raise RequestValidationError(exc.errors()) from None


def iso_z(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


async def _answer(
    request: Request, services: Services, links: Links, job: Job, notes: list[str]
) -> Any:
    """The seed's "started" answer; with `Prefer: wait=N`, the job's status once it has
    ended (200) or after N s (202)."""

    async def view() -> dict[str, Any]:
        return job_body(await services.jobs.get(job.id), links)

    return await created_answer(
        request,
        services,
        [job.id],
        answer=_started(job, notes),
        view=view,
        location=links.url(f"/api/v1/job/{job.id}"),
    )


def _started(job: Job, notes: list[str]) -> dict[str, Any]:
    message = "Video generation started" + (f" ({'; '.join(notes)})" if notes else "")
    return {
        "job_id": job.id,
        "status": STATUS_WORDS[job.phase],
        "message": message,
        "seed": job.seed,
        "num_frames": job.params.get("length"),
    }


def regime_notes(flow: Workflow, values: dict[str, Any]) -> list[str]:
    """What a client sent that is far from what the model was made for (accepted: the
    client may know better, but the answer says so)."""
    notes = []
    steps, cfg = flow.param("steps"), flow.param("cfg")
    if steps is not None and steps.default and values.get("steps", 0) > 2 * steps.default:
        notes.append(
            f"num_inference_steps {values['steps']}: this model is distilled for "
            f"{steps.default} steps, so the video takes about "
            f"{values['steps'] / steps.default:.0f}x longer"
        )
    if cfg is not None and cfg.default is not None and values.get("cfg", 0) > cfg.default + 2:
        notes.append(
            f"guidance_scale {values['cfg']:g}: this model is tuned for {cfg.default:g}; "
            "higher values over-guide it"
        )
    return notes


def seed_values(body: BaseModel) -> dict[str, Any]:
    """The request in the workflow's names; the seed's -1 seed means "draw one"."""
    values = SURFACE.values(body, skip=("num_frames", *CALLBACK_KEYS))
    if values.get("seed") == -1:
        del values["seed"]
    return values


def _frames_note(requested: int, used: int) -> list[str]:
    if requested == used:
        return []
    return [f"num_frames {requested} → {used}: the model makes 4k+1 frames"]


def job_body(job: Job, links: Links) -> dict[str, Any]:
    """A job in the seed's shape, plus `output_url`, `progress` and `seed` (and with keys
    configured, `signed_url`)."""
    status = STATUS_WORDS[job.phase]
    body: dict[str, Any] = {"job_id": job.id, "status": status}
    video = job.finished_video
    if video is not None:
        body["message"] = "Generation complete"
        body["output_path"] = f"./outputs/{video.filename}"
        body["output_url"] = links.url(f"/outputs/{video.filename}")
        body |= links.signed(f"/outputs/{video.filename}", job.client_key)
    elif status == "failed":
        body["message"] = f"Error: {job.error or job.message or 'the job was cancelled'}"
    else:
        fallback = "Generating video..." if status == "processing" else "Job queued"
        body["message"] = job.message or fallback
    body.update(
        progress=int(job.progress),
        seed=job.seed,
        num_frames=video.frames if video is not None and video.frames else job.params.get("length"),
        created_at=iso_z(job.created_at),
        updated_at=iso_z(job.updated_at),
    )
    return body


def _cache_dir(services: Services) -> str:
    settings = services.settings
    if settings.models_dir is not None:
        return str(settings.models_dir)
    if settings.comfyui_dir is not None:
        return str(settings.comfyui_dir / "models")
    return "ComfyUI's models folder"


def _v2v_size(body: Any, _upload: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    # The seed's num_frames is, here, the most source frames to use; the core fits the rest
    # (size and frames) to the source.
    return ({"length": frames_4k1(body.num_frames)} if body.num_frames else {}), []


def _v2v_note(job: Job) -> list[str]:
    params = job.params
    source: dict[str, Any] = next(iter(job.inputs.values()), {})
    note = f"{params.get('width')}x{params.get('height')}, {params.get('length')} frames"
    if source.get("frames"):
        note += f" of the source's {source['frames']}"
    return [note]


def _i2v_size(body: Any, _upload: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    length = frames_4k1(body.num_frames)
    return {"length": length}, _frames_note(body.num_frames, length)


SizeRule = Callable[[Any, dict[str, Any]], tuple[dict[str, Any], list[str]]]


def build(registry: WorkflowRegistry) -> APIRouter:
    router = APIRouter(tags=["Wan2.1 Video Server API (seed 002)"], route_class=SeedRoute)
    frames_text = "Frames (max 128); made the largest 4k+1 not above it (64 → 61)"
    t2v = registry.get(T2V)
    text_to_video_body = SURFACE.model(
        t2v,
        "TextToVideo",
        doc="The seed's text-to-video body. Omitted steps and guidance take FastWAN's own "
        "defaults (8 and 1.0), not the seed's 50 and 7.5.",
        fields={
            "seed": SEED_FIELD,
            "num_frames": (int, Field(SEED_FRAMES, ge=1, le=128, description=frames_text)),
            **CALLBACK_FIELDS,
        },
        defaults=SEED_DEFAULTS,
    )

    async def create_with_upload(
        request: Request,
        services: Services,
        caller: Principal,
        links: Links,
        *,
        workflow: str,
        file_field: str,
        kind: MediaKind,
        model: type[BaseModel],
        size: SizeRule,
    ) -> Any:
        """Stream the upload, validate the form, create the job; the upload is removed if
        any step fails."""
        requested_wait(request, services.settings.max_wait_s)
        flow = registry.get(workflow)
        services.pool.require_connected()
        limit = services.settings.max_active_jobs_per_client
        # Refused before the upload is read; the job service checks again when it creates.
        await services.jobs.check_capacity(caller.owner, limit)
        async with services.inputs.receiving(
            request.stream(),
            request.headers.get("content-type"),
            request.headers.get("content-length"),
            {file_field: kind},
        ) as form:
            upload = form.files[file_field]
            body = _parse_form(model, form.fields)
            values = seed_values(body)
            sized, notes = size(body, upload)
            values.update(sized)
            record = {
                **body.model_dump(exclude_unset=True),
                file_field: upload.get("original_name"),
            }
            job = await with_callback(
                services,
                links,
                body,
                lambda: SURFACE.create_job(
                    services.jobs,
                    flow.name,
                    values,
                    caller,
                    max_active=limit,
                    inputs=form.files,
                    request=record,
                ),
            )
        if kind == "video":
            notes = _v2v_note(job)
        return await _answer(request, services, links, job, notes + regime_notes(flow, values))

    @router.get("/health", summary="Health check")
    async def health(services: ServicesDep) -> dict[str, Any]:
        """The server is running: "healthy" when it can run jobs, "degraded" (still 200: it
        is alive, and takes jobs for later) with the reasons when no backend is up or the
        dispatcher is not running. `backends_up` says how many ComfyUI backends are
        reachable."""
        problems = run_problems(services)
        body: dict[str, Any] = {
            "status": "degraded" if problems else "healthy",
            "service": "wan2-video-server",
            "version": __version__,
            "backends_up": services.pool.health().connected,
            # Which process answered (with replicas behind a load balancer, one of several).
            "replica": services.replica,
        }
        if problems:
            body["message"] = f"Jobs are not being run: {'; '.join(problems)}."
        return body

    @router.get("/api/v1/model/info", summary="Model information")
    async def model_info(services: ServicesDep) -> dict[str, Any]:
        """The model, and whether the first reachable ComfyUI backend runs on a GPU."""
        device = await services.pool.device()
        return {
            "name": "FastWAN 2.2-5B",
            "version": "2.2",
            "provider": "comfyui",
            "gpu_enabled": device.gpu,
            "gpu_device_id": device.index,
            "gpu_name": device.name,
            "cache_dir": _cache_dir(services),
            "backend": device.backend,
            "standin": services.settings.standin,
        }

    @router.post("/api/v1/generate/text-to-video", summary="Generate a video from text")
    async def text_to_video(
        body: text_to_video_body,  # type: ignore[valid-type]
        request: Request,
        services: ServicesDep,
        caller: Caller,
        links: LinksDep,
    ) -> Any:
        """Queue a text-to-video job; poll `/api/v1/job/{job_id}`. `num_frames` N gives the
        largest 4k+1 frames not above N (64 → 61)."""
        services.pool.require_connected()
        requested_wait(request, services.settings.max_wait_s)
        data = cast(BaseModel, body)
        values = seed_values(data)
        requested: int = getattr(data, "num_frames")  # noqa: B009 (a derived model's field)
        values["length"] = frames_4k1(requested)
        job = await with_callback(
            services,
            links,
            data,
            lambda: SURFACE.create_job(
                services.jobs,
                t2v.name,
                values,
                caller,
                max_active=services.settings.max_active_jobs_per_client,
                request=data.model_dump(exclude_unset=True),
            ),
        )
        notes = _frames_note(requested, values["length"]) + regime_notes(t2v, values)
        return await _answer(request, services, links, job, notes)

    def upload_route(
        path: str,
        workflow: str,
        file_field: str,
        kind: MediaKind,
        size: SizeRule,
        fields: dict[str, tuple[Any, Any]],
        summary: str,
        description: str,
        file_text: str,
    ) -> None:
        flow = registry.workflows.get(workflow)
        if flow is None:
            problems = "; ".join(registry.broken.get(workflow, ["not found"]))

            async def unavailable() -> dict[str, Any]:
                raise ServiceUnavailable(f"The {workflow} workflow is not loaded: {problems}")

            router.add_api_route(path, unavailable, methods=["POST"], summary=summary)
            return
        model = SURFACE.model(
            flow,
            f"{kind.title()}ToVideo",
            doc=description,
            exclude=(file_field,),
            fields={"seed": SEED_FIELD, **fields, **CALLBACK_FIELDS},
            defaults={k: v for k, v in SEED_DEFAULTS.items() if k not in fields},
        )

        async def create(
            request: Request, services: ServicesDep, caller: Caller, links: LinksDep
        ) -> Any:
            return await create_with_upload(
                request,
                services,
                caller,
                links,
                workflow=workflow,
                file_field=file_field,
                kind=kind,
                model=model,
                size=size,
            )

        create.__doc__ = description
        router.add_api_route(
            path,
            create,
            methods=["POST"],
            summary=summary,
            openapi_extra=_form_schema(model, file_field, file_text),
        )

    upload_route(
        "/api/v1/generate/image-to-video",
        I2V,
        "image",
        "image",
        _i2v_size,
        {"num_frames": (int, Field(SEED_FRAMES, ge=1, le=128, description=frames_text))},
        "Generate a video from an image",
        "Multipart: `image` (file) and the seed's fields. The image is the first frame.",
        "Input image file (JPEG, PNG, WebP)",
    )
    upload_route(
        "/api/v1/generate/video-to-video",
        V2V,
        "video",
        "video",
        _v2v_size,
        {
            "width": (int | None, Field(None, description="Output width (multiple of 32)")),
            "height": (int | None, Field(None, description="Output height (multiple of 32)")),
            "num_frames": (
                int | None,
                Field(None, ge=1, le=128, description="Most source frames to use"),
            ),
        },
        "Transform a video",
        "Multipart: `video` (file) and the seed's fields; `strength` 0..1 is how much "
        "changes. The output keeps the source's aspect (at about 1280x704 pixels) and its "
        "frames (at most 121, rounded down to 4k+1) unless width, height or num_frames say "
        "otherwise.",
        "Input video file (MP4, MOV, WebM, AVI)",
    )

    @router.get("/api/v1/job/{job_id}", summary="Get job status")
    async def get_job(
        job_id: str, request: Request, services: ServicesDep, caller: Caller, links: LinksDep
    ) -> dict[str, Any]:
        """Status (pending/processing/completed/failed), message, and the output when done.
        `?wait=N` (or `Prefer: wait=N`): answer once the status changes, or after N s."""
        job = await services.jobs.get(job_id, caller)
        return job_body(await status_answer(request, services, job), links)

    @router.get("/api/v1/models", summary="List models")
    async def list_models(services: ServicesDep, presence: PresenceDep) -> dict[str, Any]:
        """Each workflow this server runs, and whether ComfyUI has all its model files."""
        if presence is None:
            raise ServiceUnavailable(
                services.problems.get("model_files", "Model file checks are not available.")
            )
        readiness = await presence.readiness()
        cache_dir = _cache_dir(services)
        models = []
        for name in services.registry.names():
            spec = services.registry.get(name).spec
            state = readiness.get(name) or {}
            models.append(
                {
                    "id": name,
                    "name": spec.title,
                    "provider": "comfyui",
                    "cache_dir": cache_dir,
                    "downloaded": bool(state.get("ready")),
                    "missing": list(state.get("missing") or []),
                    "kind": spec.kind,
                    "aliases": spec.aliases,
                }
            )
        return {"models": models}

    @router.post("/api/v1/models/download", summary="Download a model")
    async def download_model(
        body: DownloadBody, services: ServicesDep, _admin: Admin, downloads: DownloadsDep
    ) -> dict[str, Any]:
        """Start downloading the files a workflow needs (or one model file) into ComfyUI's
        models folder."""
        flow = services.registry.find(body.model_id)
        file_ids = downloads.files_for(flow.name if flow is not None else body.model_id)
        if file_ids is None:
            known = services.registry.names() + downloads.manifest.ids
            raise InvalidInput(
                "model_id", f"unknown model {body.model_id!r}; use one of: {', '.join(known)}"
            )
        records = [await downloads.start_download(file_id) for file_id in file_ids]
        items = [{"id": r.id, "model_id": r.model_id, "status": r.status.value} for r in records]
        done = all(item["status"] == "completed" for item in items)
        return {
            "message": "Model already downloaded" if done else "Model download started",
            "model_id": body.model_id,
            "downloads": items,
        }

    @router.get("/outputs/{filename}", summary="A generated video", response_class=FileResponse)
    async def output_file(filename: str, services: ServicesDep, caller: Caller) -> FileResponse:
        """The stored file (HTTP Range supported); 404 for anything that is not an output."""
        return serve_file(await services.batches.stored_output(filename, caller))

    # Players probe with HEAD before they stream; same answer without the body.
    router.add_api_route(
        "/outputs/{filename}",
        output_file,
        methods=["HEAD"],
        include_in_schema=False,
        response_class=FileResponse,
    )
    return router


class DownloadBody(SurfaceBody):
    model_id: str = Field(
        min_length=1, description="A workflow id or alias (all its files), or a model file id"
    )
