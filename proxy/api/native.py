"""The native jobs API (seed 000, the Job Runner UI): `/api/models`, `/api/jobs`, uploads, and
the per-job video. Jobs can be created without starting; stop then start is a new attempt.

A create call is JSON, or multipart/form-data when it carries its input files (the same fields
as text parts, `params` as a JSON string, the files under their parameter names: `image`,
`video`). JSON names a file uploaded beforehand by the id `POST /api/uploads` returned.

Making the job (`make_job`) and answering the call (`created`) are shared with the endpoint of
each workflow (`proxy.api.workflows`), which takes the same body without the renames,
`model_id` and `params`.
"""

import json
from collections.abc import Awaitable, Callable, Collection
from typing import Annotated, Any, Generic, TypeVar

from fastapi import APIRouter, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse
from pydantic import BaseModel, Field, StrictBool, ValidationError

from proxy.api.auth import Admin, Caller
from proxy.api.callbacks import CALLBACK_FIELDS, WebhookEvents, with_callback
from proxy.api.deps import PresenceDep, ServicesDep, job_limit, serve_file
from proxy.api.links import Links, LinksDep
from proxy.api.surface import Surface, SurfaceBody
from proxy.api.waiting import created_answer, requested_wait, status_answer
from proxy.auth import Principal
from proxy.errors import InvalidInput, NotFound
from proxy.jobs.models import Job, JobPhase, JobStatus, phase_of, status_of
from proxy.media.uploads import MediaKind
from proxy.modelfiles.presence import ModelPresence
from proxy.replicas import live_replicas
from proxy.services import Services
from proxy.workflows import Workflow, WorkflowRegistry

SURFACE = Surface(
    "native",
    {"num_inference_steps": "steps", "num_frames": "length", "guidance_scale": "cfg"},
)

# The seed's word for a cancelled job is "stopped"; a job storing its output is running.
NATIVE_WORDS = {
    JobPhase.CREATED: "pending",
    JobPhase.WAITING: "queued",
    JobPhase.RETRYING: "queued",
    JobPhase.RUNNING: "running",
    JobPhase.STORING: "running",
    JobPhase.SUCCEEDED: "completed",
    JobPhase.FAILED: "failed",
    JobPhase.CANCELLED: "stopped",
}
FROM_WORD: dict[str, set[JobStatus]] = {"cancelled": {JobStatus.CANCELLED}}
for _phase, _word in NATIVE_WORDS.items():
    FROM_WORD.setdefault(_word, set()).add(status_of(_phase))

MULTIPART = "multipart/form-data"
# Any file a workflow can take arrives under its parameter name; which ones the chosen
# workflow wants is checked once the form has been read.
FILE_FIELDS: dict[str, MediaKind] = {"image": "image", "video": "video"}


class JobOptions(SurfaceBody):
    """What a create call of the native API or of one workflow's endpoint takes besides the
    workflow's parameters."""

    start: StrictBool = Field(True, description="false: create the job without starting it")
    webhook_url: str | None = CALLBACK_FIELDS["webhook_url"][1]
    webhook_events: WebhookEvents = CALLBACK_FIELDS["webhook_events"][1]


class NativeFields(JobOptions):
    """What every native create call takes besides the workflow's parameters."""

    model_id: str = Field("fastwan_t2v", description="A workflow id or one of its aliases")
    num_gpus: int = Field(
        1, ge=1, le=64, description="Accepted for compatibility; one job runs on one GPU"
    )
    params: dict[str, Any] = Field(
        default_factory=dict, description="Any workflow parameter, under its own name"
    )


NATIVE_KEYS = set(NativeFields.model_fields)


def create_model_for(flow: Workflow) -> type[BaseModel]:
    files: dict[str, Any] = {
        p.name: (
            str | None,
            Field(None, description=f"The {p.type} file's upload id (POST /api/uploads)"),
        )
        for p in flow.file_params
    }
    return SURFACE.model(
        flow,
        f"Create{flow.request_model.__name__}",
        doc=f"A job of {flow.name}. Omitted fields take the workflow's defaults.",
        fields=files,
        base=NativeFields,
    )


def job_view(job: Job, links: Links) -> dict[str, Any]:
    data = job.model_dump(mode="json")
    data["status"] = NATIVE_WORDS[job.phase]
    data["model_id"] = job.workflow
    data["prompt"] = job.params.get("prompt")
    data["seed"] = job.seed
    for attempt in data["attempts"]:
        attempt["status"] = NATIVE_WORDS[phase_of(JobStatus(attempt["status"]))]
    path = f"/api/jobs/{job.id}/video" if job.finished_video else None
    data["video_url"] = links.maybe(path)
    data |= links.signed(path, job.client_key)
    data.pop("inputs", None)
    return data


def parse_statuses(status: str | None) -> list[JobStatus] | None:
    if not status:
        return None
    words = [w.strip() for w in status.split(",") if w.strip()]
    unknown = [w for w in words if w not in FROM_WORD]
    if unknown:
        words_known = ", ".join(sorted(set(NATIVE_WORDS.values())))
        raise InvalidInput("status", f"unknown status {unknown[0]!r}; use one of {words_known}")
    return sorted({s for w in words for s in FROM_WORD[w]}, key=lambda s: s.value)


async def read_json(request: Request) -> dict[str, Any]:
    """The JSON object of a create call (its size is bounded by `proxy.api.limits`)."""
    body = await request.body()
    try:
        data = json.loads(body or b"{}")
    except ValueError:
        raise InvalidInput("body", "is not valid JSON") from None
    if not isinstance(data, dict):
        raise InvalidInput("body", "must be a JSON object")
    return data


def form_values(fields: dict[str, str]) -> dict[str, Any]:
    """Form text parts as create-call values: blank means not given, `params` is JSON."""
    data: dict[str, Any] = {k: v for k, v in fields.items() if v.strip() or k == "prompt"}
    if "start" in data and data["start"].strip().lower() in ("true", "false"):
        data["start"] = data["start"].strip().lower() == "true"  # a form's only way to say so
    if "params" in data:
        try:
            data["params"] = json.loads(data["params"])
        except ValueError:
            raise InvalidInput("params", "is not valid JSON") from None
    return data


T = TypeVar("T")


class PerWorkflow(Generic[T]):
    """Something derived from a workflow (its request model, say), made when first asked
    for and again for each new version: a reload replaces a changed workflow's `Workflow`
    object, so the cache is keyed by that object's identity (one entry per name)."""

    def __init__(self, make: Callable[[Workflow], T]) -> None:
        self._make = make
        self._made: dict[str, tuple[Workflow, T]] = {}

    def __call__(self, flow: Workflow) -> T:
        held = self._made.get(flow.name)
        if held is not None and held[0] is flow:
            return held[1]
        made = self._make(flow)
        self._made[flow.name] = (flow, made)
        return made


async def readiness_of(presence: ModelPresence | None) -> dict[str, dict[str, Any]]:
    """Model-file readiness by workflow name ({} when files cannot be checked)."""
    return await presence.readiness() if presence is not None else {}


def workflow_info(flow: Workflow, readiness: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """A workflow as `/api/models` and `/api/workflows` show it: its description and
    parameters, and whether ComfyUI has its model files (`ready` null: not known)."""
    info = flow.describe()
    info.update(readiness.get(flow.name, {"ready": None}))
    return info


async def make_job(
    services: Services,
    caller: Principal,
    links: Links,
    *,
    flow: Workflow,
    model: type[BaseModel],
    surface: Surface,
    own_keys: Collection[str],
    data: dict[str, Any],
    files: dict[str, Any],
) -> Job:
    """A job of `flow` from a create call: `data` (its fields, validated by `model`), the
    files sent with it (stored records by parameter name) or upload ids naming files sent
    before, and `start`, `webhook_url`, `params` where `model` has them. `own_keys`: the
    fields that are the call's own, not the workflow's parameters. Errors name the fields
    as `surface`'s client sent them."""
    try:
        body = model.model_validate(data)
    except ValidationError as exc:
        raise RequestValidationError(
            [{**e, "loc": ("body", *e["loc"])} for e in exc.errors()]
        ) from None
    wanted = {p.name: p for p in flow.file_params}
    for name in files:
        if name not in wanted:
            raise InvalidInput(name, f"{flow.name} takes no {name} file")
    inputs = dict(files)
    for name, param in wanted.items():
        upload_id = getattr(body, name, None)
        if upload_id and name in inputs:
            raise InvalidInput(name, "send the file or an upload id, not both")
        if upload_id:
            kind: MediaKind = "image" if param.type == "image" else "video"
            inputs[name] = await services.inputs.copy_for_job(name, upload_id, kind, caller)
    values = surface.values(body, skip=set(own_keys) | set(wanted))
    # Any parameter under the workflow's own name, whatever the surface calls it.
    params: dict[str, Any] = getattr(body, "params", None) or {}
    values.update(params)
    # What the client sent (not the defaults): upload ids as given, files sent with the
    # call by the names they were sent under.
    request_record = body.model_dump(exclude_unset=True, exclude_none=True)
    for name, record in files.items():
        request_record[name] = record.get("original_name")
    try:
        return await with_callback(
            services,
            links,
            body,
            lambda: services.jobs.create(
                flow.name,
                values,
                inputs=inputs,
                surface=surface.name,
                client_key=caller.owner,
                max_active=job_limit(services),
                start=getattr(body, "start", True),
                request=request_record,
            ),
        )
    except InvalidInput as exc:
        # A parameter sent inside `params` keeps the workflow's name it was sent under.
        if exc.field.split(".")[0] in params:
            raise
        raise surface.translate(exc) from None


async def received_job(
    request: Request,
    services: Services,
    kinds: dict[str, MediaKind],
    make: Callable[[dict[str, Any], dict[str, Any]], Awaitable[Job]],
) -> Job:
    """The job `make(data, files)` makes of a create call's body: a JSON object (no files), or
    multipart/form-data whose text parts are the fields and whose file parts (under `kinds`'
    names) are stored for the job while `make` runs."""
    content_type = request.headers.get("content-type", "")
    if not content_type.startswith(MULTIPART):
        return await make(await read_json(request), {})
    async with services.inputs.receiving(
        request.stream(),
        content_type,
        request.headers.get("content-length"),
        kinds,
        required=False,
    ) as form:
        return await make(form_values(form.fields), form.files)


async def created(
    request: Request, response: Response, services: Services, links: Links, job: Job
) -> Any:
    """What a create call answers: the job (201, `Location` of its status), or with
    `Prefer: wait=N` / `?wait=N` once it has ended (200) or N seconds have passed (202)."""
    location = links.url(f"/api/jobs/{job.id}")
    response.headers["Location"] = location

    async def view() -> dict[str, Any]:
        return job_view(await services.jobs.get(job.id), links)

    return await created_answer(
        request,
        services,
        [job.id],
        answer=job_view(job, links),
        view=view,
        location=location,
    )


def build(registry: WorkflowRegistry, default_workflow: str) -> APIRouter:
    router = APIRouter(prefix="/api", tags=["jobs"])
    models = PerWorkflow(create_model_for)
    # The documented JSON body is the default workflow's, made again after a reload (the
    # OpenAPI document is regenerated then: `proxy.api.workflows.WorkflowDocs`).
    json_body: dict[str, Any] = {}

    def document_default() -> None:
        flow = registry.find(default_workflow)
        if flow is not None:
            json_body["schema"] = models(flow).model_json_schema()

    document_default()
    registry.listeners.append(document_default)

    def workflow_for(model_id: Any) -> Workflow:
        try:
            return registry.get(str(model_id))
        except NotFound:
            served = registry.names() + [
                a for n in registry.names() for a in registry.get(n).spec.aliases
            ]
            raise InvalidInput(
                "model_id", f"{model_id!r} is not served; use one of: {', '.join(served)}"
            ) from None

    async def create(
        services: Services,
        caller: Principal,
        links: Links,
        data: dict[str, Any],
        files: dict[str, Any],
    ) -> Job:
        flow = workflow_for(data.get("model_id") or default_workflow)
        return await make_job(
            services,
            caller,
            links,
            flow=flow,
            model=models(flow),
            surface=SURFACE,
            own_keys=NATIVE_KEYS,
            data=data,
            files=files,
        )

    @router.get("/models", summary="Workflows this server offers")
    async def list_models(services: ServicesDep, presence: PresenceDep) -> dict[str, Any]:
        """Each workflow with its parameters (types, defaults, ranges) and model-file readiness."""
        readiness = await readiness_of(presence)
        found = services.registry
        items = [workflow_info(found.get(name), readiness) for name in found.names()]
        broken = [{"id": n, "problems": p} for n, p in found.broken.items()]
        return {"models": items, "unavailable": broken, "standin": services.settings.standin}

    @router.get("/jobs", summary="List jobs, newest first")
    async def list_jobs(
        services: ServicesDep,
        caller: Caller,
        links: LinksDep,
        status: str | None = Query(
            None, description="Filter: pending, queued, running, completed, failed, stopped"
        ),
        limit: int = Query(50, ge=1, le=1000),
        offset: int = Query(0, ge=0, le=2**31),
    ) -> dict[str, Any]:
        statuses = parse_statuses(status)
        jobs = await services.jobs.list(
            statuses=statuses, limit=limit, offset=offset, caller=caller
        )
        total = await services.jobs.count(statuses=statuses, caller=caller)
        return {
            "jobs": [job_view(j, links) for j in jobs],
            "total": total,
            "limit": limit,
            "offset": offset,
        }

    @router.post(
        "/jobs",
        status_code=201,
        summary="Create a job (and start it unless start=false)",
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {
                    "application/json": json_body,
                    MULTIPART: {
                        "schema": {
                            "type": "object",
                            "description": "The JSON fields as text parts (params as a JSON "
                            "string), and the input files under their parameter names.",
                            "properties": {
                                "model_id": {"type": "string"},
                                "prompt": {"type": "string"},
                                "image": {"type": "string", "format": "binary"},
                                "video": {"type": "string", "format": "binary"},
                            },
                        }
                    },
                },
            }
        },
    )
    async def create_job(
        request: Request,
        response: Response,
        services: ServicesDep,
        caller: Caller,
        links: LinksDep,
    ) -> Any:
        """JSON for a job without files or with upload ids; multipart with its files.
        `Prefer: wait=N` (or `?wait=N`): answer once the job has ended (200), or after N
        seconds with the job as it is (202, `Location`)."""
        requested_wait(request, services.settings.max_wait_s)  # a bad value: 400 first
        job = await received_job(
            request,
            services,
            FILE_FIELDS,
            lambda data, files: create(services, caller, links, data, files),
        )
        return await created(request, response, services, links, job)

    @router.get("/jobs/{job_id}", summary="One job")
    async def get_job(
        job_id: str, request: Request, services: ServicesDep, caller: Caller, links: LinksDep
    ) -> dict[str, Any]:
        """`?wait=N` (or `Prefer: wait=N`): answer once the job changes state, or after N s."""
        job = await services.jobs.get(job_id, caller)
        return job_view(await status_answer(request, services, job), links)

    @router.post("/jobs/{job_id}/start", summary="Start a pending, stopped or failed job")
    async def start_job(
        job_id: str, services: ServicesDep, caller: Caller, links: LinksDep
    ) -> dict[str, Any]:
        """Starting again after a stop or failure is a new attempt; the job keeps its history."""
        job = await services.jobs.start(job_id, caller, max_active=job_limit(services))
        return job_view(job, links)

    @router.post("/jobs/{job_id}/stop", summary="Stop a queued or running job")
    async def stop_job(
        job_id: str, services: ServicesDep, caller: Caller, links: LinksDep
    ) -> dict[str, Any]:
        """Removes the job's prompt from ComfyUI's queue, or interrupts it if running."""
        return job_view(await services.jobs.stop(job_id, caller), links)

    @router.delete("/jobs/{job_id}", summary="Delete a job and its files")
    async def delete_job(job_id: str, services: ServicesDep, caller: Caller) -> dict[str, Any]:
        await services.jobs.delete(job_id, caller)
        return {"id": job_id, "deleted": True}

    @router.get("/jobs/{job_id}/video", summary="Stream the video", response_class=FileResponse)
    async def job_video(job_id: str, services: ServicesDep, caller: Caller) -> FileResponse:
        """The finished MP4, inline, with HTTP Range (the browser player seeks with it)."""
        job = await services.jobs.get(job_id, caller)
        return serve_file(await services.jobs.video_file(job), inline=True)

    @router.post(
        "/uploads",
        status_code=201,
        summary="Upload an input file (an image or a video) for later jobs",
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {
                    MULTIPART: {
                        "schema": {
                            "type": "object",
                            "required": ["file"],
                            "properties": {"file": {"type": "string", "format": "binary"}},
                        }
                    }
                },
            }
        },
    )
    async def upload(
        request: Request,
        services: ServicesDep,
        caller: Caller,
        kind: Annotated[
            MediaKind, Query(description="image (JPEG, PNG, WebP) or video (MP4, MOV, WebM)")
        ],
    ) -> dict[str, Any]:
        """Multipart with one `file` part; returns the upload's id, to name in a create call
        (`"image": "<id>"`), with what was found in the file (size, frames, fps)."""
        async with services.inputs.receiving(
            request.stream(),
            request.headers.get("content-type"),
            request.headers.get("content-length"),
            {"file": kind},
        ) as form:
            return await services.inputs.create(form.files["file"], caller.owner)

    @router.get("/uploads/{upload_id}", summary="An uploaded input file's description")
    async def get_upload(upload_id: str, services: ServicesDep, caller: Caller) -> dict[str, Any]:
        return await services.inputs.get(upload_id, caller)

    @router.delete("/uploads/{upload_id}", summary="Delete an uploaded input file")
    async def delete_upload(
        upload_id: str, services: ServicesDep, caller: Caller
    ) -> dict[str, Any]:
        """Jobs already made from it keep their own copy."""
        await services.inputs.delete(upload_id, caller)
        return {"id": upload_id, "deleted": True}

    @router.get("/backends", summary="The ComfyUI backends (one per GPU; admin keys only)")
    async def backends(services: ServicesDep, _admin: Admin) -> dict[str, Any]:
        return {"backends": services.pool.health().backends}

    @router.get(
        "/replicas",
        summary="The proxy replicas sharing this database, and the backends each drives "
        "(admin keys only)",
    )
    async def replicas(services: ServicesDep, _admin: Admin) -> dict[str, Any]:
        """With PostgreSQL, every live replica (seen within LEASE_TTL_S) and the ComfyUI
        backends it holds the lease of; with SQLite, this one process, driving them all."""
        if services.leases is None:
            names = [b.name for b in services.pool.backends]
            return {"replicas": [{"id": services.replica, "backends": names}], "replicated": False}
        found = await live_replicas(services.db, services.settings.lease_ttl_s)
        return {"replicas": found, "replicated": True}

    return router
