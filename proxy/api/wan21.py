"""Seed 002, the Wan2.1 Video Server API: `/health`, `/api/v1/model/info`,
`/api/v1/generate/{text,image,video}-to-video`, `/api/v1/job/{id}`, `/api/v1/models`,
`/api/v1/models/download` and `/outputs/{file}`.

The seed's vocabulary, on the shared jobs:
- statuses: pending (waiting for a GPU), processing, completed, failed (cancelled is failed);
- every error is `{"error": "..."}`: 400 for bad input (never 422; the message names the
  field), 429 past `max_active_jobs_per_client` (with Retry-After), 503 when no ComfyUI
  backend is reachable, 500 for anything unexpected;
- `seed: -1` means "draw one at random" (the drawn seed is stored on the job and returned).

Frame counts: Wan's VAE makes 4k+1 frames (1, 5, ... 61, ... 125). Elsewhere a count that is
not 4k+1 is refused, but the seed's own default (64) is not one, so on this surface only
`num_frames` N becomes the largest 4k+1 not above N (64 → 61, 128 → 125); the response says
so. Video-to-video keeps the source's frames, capped at `num_frames` (default 121, 5 s at
24 fps) and rounded down to 4k+1.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime
from typing import Annotated, Any

import anyio
from fastapi import APIRouter, Depends, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse
from fastapi.routing import APIRoute
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect

from proxy import __version__
from proxy.api.deps import client_key, file_response
from proxy.errors import InvalidInput, NotFound, ProxyError
from proxy.jobs.models import Job, JobStatus
from proxy.media.probe import content_type_of
from proxy.media.uploads import MediaKind, discard, receive_form
from proxy.services import Services, get_services

log = logging.getLogger("proxy.api.wan21")

SEED_MAX = 2**64 - 1
T2V, I2V, V2V = "fastwan_t2v", "fastwan_i2v", "fastwan_v2v"
# Video-to-video: the most source frames used when the request names no num_frames.
V2V_DEFAULT_FRAMES = 121
# Video-to-video without width/height: the source's aspect at about the 5B's native area.
V2V_MAX_AREA = 1280 * 704

STATUS_WORDS = {
    JobStatus.PENDING: "pending",
    JobStatus.QUEUED: "pending",
    JobStatus.RUNNING: "processing",
    JobStatus.COMPLETED: "completed",
    JobStatus.FAILED: "failed",
    JobStatus.CANCELLED: "failed",
}


class BadRequest(InvalidInput):
    """The seed's 400: bad input, naming the field."""

    status_code = 400

    def __init__(self, field: str, message: str) -> None:
        super().__init__(field, message)
        self.message = f"Invalid request: {field}: {message}"


class Unavailable(ProxyError):
    status_code = 503


class InternalError(ProxyError):
    status_code = 500


def _bad_request(errors: list[Any]) -> BadRequest:
    """The first pydantic / FastAPI validation error as a 400 naming its field."""
    err = errors[0] if errors else {}
    loc = [str(p) for p in err.get("loc", ()) if p not in ("body", "query", "path")]
    name = ".".join(loc) or "body"
    if err.get("type") == "missing":
        return BadRequest(name, "is required")
    if err.get("type") == "extra_forbidden":
        return BadRequest(name, "is not a field of this request")
    if err.get("type") == "json_invalid":
        return BadRequest("body", "is not valid JSON")
    return BadRequest(name, str(err.get("msg", "invalid value")).removeprefix("Value error, "))


class SeedRoute(APIRoute):
    """Puts the seed's codes on errors raised in this router: request validation and
    `InvalidInput` become 400, anything unexpected a 500 `{"error": ...}`. The app's handlers
    render the rest of the exception tree (429 with Retry-After, 404, 503)."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def seed_handler(request: Request) -> Response:
            try:
                return await handler(request)
            except RequestValidationError as exc:
                raise _bad_request(list(exc.errors())) from None
            except InvalidInput as exc:
                if isinstance(exc, BadRequest):
                    raise
                raise BadRequest(exc.field, exc.message.removeprefix(f"{exc.field}: ")) from None
            except (ProxyError, HTTPException, ClientDisconnect):
                raise
            except Exception as exc:
                log.exception("%s %s failed", request.method, request.url.path)
                raise InternalError(
                    f"Internal server error: {type(exc).__name__} (details are in the proxy log)"
                ) from exc

        return seed_handler


router = APIRouter(tags=["Wan2.1 Video Server API (seed 002)"], route_class=SeedRoute)
ServicesDep = Annotated[Services, Depends(get_services)]


# -- request bodies -------------------------------------------------------------------------


class CommonParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    prompt: str = Field("", max_length=4000, description="Text guidance")
    negative_prompt: str = Field("", max_length=4000, description="Things to avoid")
    fps: int = Field(24, ge=1, le=120, description="Frames per second")
    seed: int = Field(-1, ge=-1, le=SEED_MAX, description="Random seed (-1 for random)")
    guidance_scale: float = Field(7.5, ge=1, le=20, description="Prompt adherence (1-20)")
    num_inference_steps: int = Field(50, ge=25, le=100, description="Quality steps (25-100)")

    def workflow_values(self) -> dict[str, Any]:
        values: dict[str, Any] = {
            "prompt": self.prompt,
            "negative_prompt": self.negative_prompt,
            "fps": self.fps,
            "cfg": self.guidance_scale,
            "steps": self.num_inference_steps,
        }
        if self.seed != -1:
            values["seed"] = self.seed
        return values


class TextToVideo(CommonParams):
    """The seed's text-to-video body."""

    prompt: str = Field(min_length=1, max_length=4000, description="What the video shows")
    num_frames: int = Field(
        64, ge=1, le=128, description="Frames (max 128); made the largest 4k+1 not above it"
    )
    width: int = Field(512, description="Width in pixels, a multiple of 32")
    height: int = Field(512, description="Height in pixels, a multiple of 32")


class ImageToVideo(TextToVideo):
    """The seed's image-to-video form fields (besides the `image` file)."""

    prompt: str = Field("", max_length=4000, description="Additional guidance text")


class VideoToVideo(CommonParams):
    """The seed's video-to-video form fields (besides the `video` file). `width`, `height`
    and `num_frames` are extensions: by default the output keeps the source's aspect (at about
    1280x704 pixels) and its frames (at most 121)."""

    strength: float = Field(0.8, ge=0, le=1, description="Transformation strength (0-1)")
    width: int | None = Field(None, description="Output width (multiple of 32)")
    height: int | None = Field(None, description="Output height (multiple of 32)")
    num_frames: int | None = Field(None, ge=1, le=128, description="Most source frames to use")


def frames_4k1(n: int) -> int:
    """The largest 4k+1 not above n (n >= 1)."""
    return n - (n - 1) % 4


def fit_size(width: int, height: int, max_area: int = V2V_MAX_AREA) -> tuple[int, int]:
    """The source's aspect, no larger than `max_area`, in multiples of 32."""
    scale = min(1.0, math.sqrt(max_area / (width * height)))
    return (
        min(2048, max(32, round(width * scale / 32) * 32)),
        min(2048, max(32, round(height * scale / 32) * 32)),
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


def _parse_form(model: type[BaseModel], fields: dict[str, str]) -> Any:
    # A blank form field (`-F seed=`) means "not given", as it does for most form clients.
    given = {k: v for k, v in fields.items() if v.strip() or k in ("prompt", "negative_prompt")}
    try:
        return model.model_validate(given)
    except ValidationError as exc:
        raise _bad_request(list(exc.errors())) from None


# -- helpers --------------------------------------------------------------------------------


def _require_backend(services: Services) -> None:
    if not any(b.socket.connected for b in services.pool.backends):
        raise Unavailable(
            "Model not loaded: no ComfyUI backend is reachable. Try again when it is up."
        )


async def _require_capacity(services: Services, key: str) -> None:
    """Refuse before an upload is read when the client is already at its limit (the job
    service checks again when it creates the job)."""
    await services.jobs.check_capacity(key, services.settings.max_active_jobs_per_client)


def iso_z(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _started(job: Job, note: str | None) -> dict[str, Any]:
    message = "Video generation started" + (f" ({note})" if note else "")
    return {
        "job_id": job.id,
        "status": STATUS_WORDS[job.status],
        "message": message,
        "seed": job.seed,
        "num_frames": job.params.get("length"),
    }


def _frames_note(requested: int, used: int) -> str | None:
    if requested == used:
        return None
    return f"num_frames {requested} → {used}: the model makes 4k+1 frames"


def job_body(job: Job) -> dict[str, Any]:
    """A job in the seed's shape, plus `output_url`, `progress` and `seed`."""
    status = STATUS_WORDS[job.status]
    body: dict[str, Any] = {"job_id": job.id, "status": status}
    video = job.video if job.status is JobStatus.COMPLETED else None
    if video is not None:
        body["message"] = "Generation complete"
        body["output_path"] = f"./outputs/{video.filename}"
        body["output_url"] = f"/outputs/{video.filename}"
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


async def _create_with_upload(
    request: Request,
    services: Services,
    *,
    workflow: str,
    file_field: str,
    kind: MediaKind,
    model: type[CommonParams],
    build: Callable[[Any, dict[str, Any]], tuple[dict[str, Any], str | None]],
) -> dict[str, Any]:
    """Stream the upload, validate the form, create the job; the upload is removed if any
    step fails."""
    _require_backend(services)
    key = client_key(request)
    await _require_capacity(services, key)
    settings = services.settings
    form = await receive_form(
        request.stream(),
        request.headers.get("content-type"),
        expect={file_field: kind},
        uploads_dir=settings.uploads_path,
        max_upload_bytes=settings.max_upload_bytes,
        content_length=request.headers.get("content-length"),
    )
    upload = form.files[file_field]
    try:
        params = _parse_form(model, form.fields)
        values, note = build(params, upload)
        job = await services.jobs.create(
            workflow,
            values,
            inputs=form.files,
            surface="wan21",
            client_key=key,
            max_active=settings.max_active_jobs_per_client,
            request={**params.model_dump(), file_field: upload.get("original_name")},
        )
    except BaseException:
        await discard(form.files.values(), settings.uploads_path)
        raise
    return _started(job, note)


# -- routes ---------------------------------------------------------------------------------


@router.get("/health", summary="Health check")
async def health(services: ServicesDep) -> dict[str, Any]:
    """The server is running (`backends_up` says how many ComfyUI backends are reachable)."""
    up = sum(1 for b in services.pool.backends if b.socket.connected)
    return {
        "status": "healthy",
        "service": "wan2-video-server",
        "version": __version__,
        "backends_up": up,
    }


@router.get("/api/v1/model/info", summary="Model information")
async def model_info(services: ServicesDep) -> dict[str, Any]:
    """The model, and whether the first reachable ComfyUI backend runs on a GPU."""
    backends = services.pool.up() or [b for b in services.pool.backends if b.socket.connected]
    if not backends:
        raise Unavailable("Model not loaded: no ComfyUI backend is reachable.")
    backend = backends[0]
    stats = await backend.client.system_stats()
    devices = [d for d in stats.get("devices") or [] if isinstance(d, dict)]
    gpus = [d for d in devices if str(d.get("type", "cpu")).lower() != "cpu"]
    gpu = gpus[0] if gpus else None
    return {
        "name": "FastWAN 2.2-5B",
        "version": "2.2",
        "provider": "comfyui",
        "gpu_enabled": gpu is not None,
        "gpu_device_id": int(gpu.get("index") or 0) if gpu is not None else None,
        "gpu_name": gpu.get("name") if gpu is not None else None,
        "cache_dir": _cache_dir(services),
        "backend": backend.name,
        "standin": services.settings.standin,
    }


@router.post("/api/v1/generate/text-to-video", summary="Generate a video from text")
async def text_to_video(
    body: TextToVideo, request: Request, services: ServicesDep
) -> dict[str, Any]:
    """Queue a text-to-video job; poll `/api/v1/job/{job_id}`. `num_frames` N gives the
    largest 4k+1 frames not above N (64 → 61)."""
    _require_backend(services)
    values = body.workflow_values()
    values.update(width=body.width, height=body.height, length=frames_4k1(body.num_frames))
    job = await services.jobs.create(
        T2V,
        values,
        surface="wan21",
        client_key=client_key(request),
        max_active=services.settings.max_active_jobs_per_client,
        request=body.model_dump(),
    )
    return _started(job, _frames_note(body.num_frames, values["length"]))


def _i2v_values(params: ImageToVideo, _upload: dict[str, Any]) -> tuple[dict[str, Any], str | None]:
    values = params.workflow_values()
    values.update(width=params.width, height=params.height, length=frames_4k1(params.num_frames))
    return values, _frames_note(params.num_frames, values["length"])


def _v2v_values(params: VideoToVideo, upload: dict[str, Any]) -> tuple[dict[str, Any], str | None]:
    values = params.workflow_values()
    values["strength"] = params.strength
    width, height = params.width, params.height
    if width is None or height is None:
        fit_w, fit_h = fit_size(int(upload["width"]), int(upload["height"]))
        width, height = width or fit_w, height or fit_h
    cap = params.num_frames or V2V_DEFAULT_FRAMES
    frames = upload.get("frames")
    length = frames_4k1(min(cap, frames) if frames else cap)
    values.update(width=width, height=height, length=length)
    note = f"{width}x{height}, {length} frames"
    if frames:
        note += f" of the source's {frames}"
    return values, note


@router.post(
    "/api/v1/generate/image-to-video",
    summary="Generate a video from an image",
    openapi_extra=_form_schema(ImageToVideo, "image", "Input image file (JPEG, PNG, WebP)"),
)
async def image_to_video(request: Request, services: ServicesDep) -> dict[str, Any]:
    """Multipart: `image` (file) and the seed's fields. The image is the first frame."""
    return await _create_with_upload(
        request,
        services,
        workflow=I2V,
        file_field="image",
        kind="image",
        model=ImageToVideo,
        build=_i2v_values,
    )


@router.post(
    "/api/v1/generate/video-to-video",
    summary="Transform a video",
    openapi_extra=_form_schema(VideoToVideo, "video", "Input video file (MP4, MOV, WebM, AVI)"),
)
async def video_to_video(request: Request, services: ServicesDep) -> dict[str, Any]:
    """Multipart: `video` (file) and the seed's fields; `strength` 0..1 is how much changes.
    The output keeps the source's frames (at most 121, rounded down to 4k+1)."""
    return await _create_with_upload(
        request,
        services,
        workflow=V2V,
        file_field="video",
        kind="video",
        model=VideoToVideo,
        build=_v2v_values,
    )


@router.get("/api/v1/job/{job_id}", summary="Get job status")
async def get_job(job_id: str, services: ServicesDep) -> dict[str, Any]:
    """Status (pending/processing/completed/failed), message, and the output when done."""
    return job_body(await services.jobs.get(job_id))


@router.get("/api/v1/models", summary="List models")
async def list_models(services: ServicesDep) -> dict[str, Any]:
    """Each workflow this server runs, and whether ComfyUI has all its model files."""
    presence = services.extras.get("presence")
    if presence is None:
        raise Unavailable("Model file checks are not enabled in this proxy.")
    readiness = await presence()
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


class DownloadBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model_id: str = Field(
        min_length=1, description="A workflow id or alias (all its files), or a model file id"
    )


@router.post("/api/v1/models/download", summary="Download a model")
async def download_model(body: DownloadBody, services: ServicesDep) -> dict[str, Any]:
    """Start downloading the files a workflow needs (or one model file) into ComfyUI's
    models folder."""
    downloads = services.extras.get("downloads")
    if downloads is None:
        raise Unavailable("Model downloads are not enabled in this proxy.")
    manifest = downloads.manifest
    try:
        workflow = services.registry.get(body.model_id).name
    except NotFound:
        workflow = None
    if workflow is not None:
        file_ids = [entry.id for entry in manifest.required_for(workflow)]
    elif body.model_id in manifest.ids:
        file_ids = [body.model_id]
    else:
        known = services.registry.names() + manifest.ids
        raise BadRequest(
            "model_id", f"unknown model {body.model_id!r}; use one of: {', '.join(known)}"
        )
    records = [await downloads.start_download(file_id) for file_id in file_ids]
    items = [
        {
            "id": r.id,
            "model_id": getattr(r, "model_id", file_id),
            "status": getattr(r.status, "value", r.status),
        }
        for r, file_id in zip(records, file_ids, strict=True)
    ]
    done = all(item["status"] == "completed" for item in items)
    return {
        "message": "Model already downloaded" if done else "Model download started",
        "model_id": body.model_id,
        "downloads": items,
    }


@router.get("/outputs/{filename}", summary="A generated video", response_class=FileResponse)
async def output_file(filename: str, services: ServicesDep) -> FileResponse:
    """The stored file (HTTP Range supported); 404 for anything that is not an output."""
    if filename.endswith(".part") or any(ord(c) < 32 for c in filename):
        raise NotFound(f"no output named {filename!r}")
    path = services.outputs.path_for(filename)
    if not await anyio.Path(path).is_file():
        raise NotFound(f"no output named {filename!r}")
    return file_response(path, content_type_of(path), inline=True)


# Players probe with HEAD before they stream; same answer without the body.
router.add_api_route(
    "/outputs/{filename}",
    output_file,
    methods=["HEAD"],
    include_in_schema=False,
    response_class=FileResponse,
)
