"""Each workflow as a resource of its own: `/api/workflows` describes them (parameters,
readiness, load problems) and `POST /api/workflows/<name>/jobs` makes a job of one, its body
the workflow's parameters under their own names.

The workflows change while the proxy runs (a hot reload replaces the registry's contents), so
nothing here is fixed when the router is built: the create route looks the workflow up and
validates against its current version, and the OpenAPI document (`WorkflowDocs`) gives every
served workflow a path of its own with its request schema, made again after each reload.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import quote

from fastapi import APIRouter, FastAPI, Request, Response
from pydantic import BaseModel, Field, StrictBool

from proxy.api.auth import Admin, Caller
from proxy.api.deps import PresenceDep, ServicesDep
from proxy.api.links import LinksDep
from proxy.api.native import (
    MULTIPART,
    JobOptions,
    PerWorkflow,
    created,
    make_job,
    readiness_of,
    received_job,
    workflow_info,
)
from proxy.api.surface import Surface, SurfaceBody
from proxy.api.waiting import requested_wait
from proxy.jobs.models import Job
from proxy.media.uploads import MediaKind
from proxy.workflows import Workflow, WorkflowRegistry

# The workflow's own parameter names, no renames.
SURFACE = Surface("workflow")

# How a workflow is served (`status` in the descriptions).
SERVED = "served"
LAST_GOOD = "last good version"  # its file no longer loads: the version before still serves
NOT_SERVED = "not served"  # it never loaded (or was removed while broken)

CREATE_DOC = """The workflow's parameters under their own names, as JSON; or as
multipart/form-data with the input files under their parameter names and the other fields as
text parts. JSON may name a file uploaded before (`POST /api/uploads`) by its id.
Omitted fields take the workflow's defaults; a bad field is a 422 naming it.

`start: false` creates the job without starting it; `webhook_url` is sent its events.
`Prefer: wait=N` (or `?wait=N`): answer once the job has ended (200), or after N seconds with
the job as it is (202, `Location`). An `Idempotency-Key` header makes a retry safe."""


OWN_KEYS = frozenset(JobOptions.model_fields)


def job_model_for(flow: Workflow) -> type[BaseModel]:
    files: dict[str, Any] = {
        p.name: (
            str | None,
            Field(
                None,
                description=f"{p.description or f'The {p.type} file.'} JSON: the id of an "
                f"upload (POST /api/uploads); multipart: the file itself",
            ),
        )
        for p in flow.file_params
    }
    return SURFACE.model(
        flow,
        flow.request_model.__name__.removesuffix("Request") + "Job",
        doc=f"A job of {flow.name}. Omitted fields take the workflow's defaults.",
        fields=files,
        base=JobOptions,
    )


def file_kinds(flow: Workflow) -> dict[str, MediaKind]:
    return {p.name: "image" if p.type == "image" else "video" for p in flow.file_params}


def jobs_path(name: str) -> str:
    return f"/api/workflows/{quote(name, safe='')}/jobs"


def describe(
    registry: WorkflowRegistry, name: str, readiness: dict[str, dict[str, Any]]
) -> dict[str, Any]:
    """One workflow of the registry, served or not, with how it is served and why not."""
    flow = registry.workflows.get(name)
    problems = registry.problems(name)
    if flow is None:
        return {"id": name, "status": NOT_SERVED, "problems": problems, "ready": None}
    info = workflow_info(flow, readiness)
    info["status"] = LAST_GOOD if problems else SERVED
    info["problems"] = problems
    info["endpoint"] = jobs_path(name)
    return info


class ImportBody(SurfaceBody):
    path: str = Field(
        ...,
        max_length=512,
        description="A workflow saved in ComfyUI's graph editor: its file in the workflows "
        "folder of ComfyUI's user data, like my_flow.json",
    )
    name: str | None = Field(
        None, max_length=64, description="The name to serve it under (default: the file's)"
    )
    overwrite: StrictBool = Field(False, description="Replace a workflow of that name")


def build(registry: WorkflowRegistry) -> tuple[APIRouter, WorkflowDocs]:
    """The routes, and the OpenAPI document that lists a path per served workflow."""
    router = APIRouter(prefix="/api/workflows", tags=["workflows"])
    models = PerWorkflow(job_model_for)
    docs = WorkflowDocs(registry, models)

    @router.get("", summary="Every workflow: parameters, readiness and load problems")
    async def list_workflows(services: ServicesDep, presence: PresenceDep) -> dict[str, Any]:
        """Each served workflow as `/api/models` describes it, with `status` (`served`, or
        `last good version` when its file was changed and no longer loads: `problems` say
        why), `endpoint` (where its jobs are created) and model-file readiness (`ready`
        null: not known); and each template that does not load (`not served`)."""
        readiness = await readiness_of(presence)
        found = services.registry
        names = sorted(set(found.workflows) | set(found.broken))
        return {
            "workflows": [describe(found, name, readiness) for name in names],
            "standin": services.settings.standin,
        }

    @router.post(
        "/import",
        status_code=201,
        summary="Serve a workflow saved in ComfyUI's graph editor (admin keys only)",
    )
    async def import_workflow(
        body: ImportBody, services: ServicesDep, _admin: Admin
    ) -> dict[str, Any]:
        """Copies it from the connected ComfyUI (UI or API format) into the workflows folder,
        once it is known to load, and serves it; 409 when that name is taken (unless
        `overwrite`), 422 saying why it cannot be served."""
        return await services.workflow_sources.import_workflow(
            body.path, body.name, overwrite=body.overwrite
        )

    @router.get("/{name}", summary="One workflow: parameters, readiness and load problems")
    async def get_workflow(
        name: str, services: ServicesDep, presence: PresenceDep
    ) -> dict[str, Any]:
        """As listed by `GET /api/workflows`; a workflow's alias names it too."""
        found = services.registry
        if name not in found.workflows and name not in found.broken:
            name = found.get(name).name  # an alias; else 404 naming the served ones
        return describe(found, name, await readiness_of(presence))

    @router.get("/{name}/timings", summary="What the proxy has learned of a workflow's node times")
    async def timings(name: str, services: ServicesDep, caller: Caller) -> dict[str, Any]:
        """Per backend and size (width, height, length, steps): each node's measured duration
        (a moving average over `samples` runs; `@store` is the proxy's own storing of the
        outputs). The progress bar and ETA weigh nodes by these; an empty list means the
        workflow's fixed weights are still in use. Backend addresses are shown to admins."""
        flow = services.registry.get(name)
        entries = await services.timings.learned(flow.name)
        if not caller.admin:  # backend addresses are for admins (as at /api/backends)
            for entry in entries:
                entry.pop("backend")
        return {"workflow": flow.name, "timings": entries}

    # Documented per workflow by `WorkflowDocs`, each with its own request schema.
    @router.post("/{name}/jobs", status_code=201, include_in_schema=False)
    async def create_job(
        name: str,
        request: Request,
        response: Response,
        services: ServicesDep,
        caller: Caller,
        links: LinksDep,
    ) -> Any:
        requested_wait(request, services.settings.max_wait_s)  # a bad value: 400 first
        flow = services.registry.get(name)  # the version served now
        model = models(flow)

        async def make(data: dict[str, Any], files: dict[str, Any]) -> Job:
            return await make_job(
                services,
                caller,
                links,
                flow=flow,
                model=model,
                surface=SURFACE,
                own_keys=OWN_KEYS,
                data=data,
                files=files,
            )

        job = await received_job(request, services, file_kinds(flow), make)
        return await created(request, response, services, links, job)

    return router, docs


class WorkflowDocs:
    """The OpenAPI document: the app's own, plus `POST /api/workflows/<name>/jobs` for every
    served workflow with its request schema (JSON, and multipart with binary file fields when
    it takes files), summarised by its title and description. Made when first asked for after
    each change of the registry (a listener drops it)."""

    def __init__(self, registry: WorkflowRegistry, models: PerWorkflow[type[BaseModel]]) -> None:
        self.registry = registry
        self.models = models
        self._document: dict[str, Any] | None = None
        registry.listeners.append(self.reset)

    def reset(self) -> None:
        self._document = None

    def document(self, app: FastAPI) -> dict[str, Any]:
        if self._document is None:
            # FastAPI keeps the document it made; other routes' schemas follow the workflows
            # too (`POST /api/jobs` shows the default workflow's parameters).
            app.openapi_schema = None
            self._document = with_workflow_paths(app.openapi(), self.registry, self.models)
        return self._document


def with_workflow_paths(
    base: dict[str, Any], registry: WorkflowRegistry, models: PerWorkflow[type[BaseModel]]
) -> dict[str, Any]:
    """`base` (not changed) with a path per served workflow and its schemas' components."""
    paths = dict(base.get("paths", {}))
    components = dict(base.get("components", {}))
    schemas = dict(components.get("schemas", {}))
    for name, key in component_keys(registry.names()).items():
        flow = registry.workflows[name]
        operation, made = job_operation(flow, models(flow), key)
        paths[jobs_path(name)] = {"post": operation}
        schemas.update(made)
    return {**base, "paths": paths, "components": {**components, "schemas": schemas}}


def component_keys(names: list[str]) -> dict[str, str]:
    """A key per workflow name, unique, of the characters component names may hold; the
    workflow's components are `workflow.<key>.<...>` (FastAPI's own names have no dot)."""
    keys: dict[str, str] = {}
    for name in names:
        base = re.sub(r"[^A-Za-z0-9_-]", "_", name)
        key, n = base, 1
        while key in keys.values():
            n += 1
            key = f"{base}_{n}"
        keys[name] = key
    return keys


def _ref(component: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{component}"}


_JOB = {
    "application/json": {
        "schema": {"type": "object", "description": "The job, as GET /api/jobs/{id} shows it"}
    }
}
_ERROR = {
    "application/json": {
        "schema": {
            "type": "object",
            "properties": {"error": {"type": "string"}, "field": {"type": "string"}},
        }
    }
}
RESPONSES: dict[str, Any] = {
    "201": {"description": "The job, created (Location: its status)", "content": _JOB},
    "200": {"description": "Asked to wait: the job, ended within the wait", "content": _JOB},
    "202": {"description": "Asked to wait: the job, not ended yet", "content": _JOB},
    "404": {"description": "The workflow is not served (any more)", "content": _ERROR},
    "422": {"description": "A bad field, named in `field`", "content": _ERROR},
}


def job_operation(
    flow: Workflow, model: type[BaseModel], key: str
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The OpenAPI operation creating a job of `flow`, and the components it refers to."""
    prefix = f"workflow.{key}"
    schema = model.model_json_schema(ref_template=f"#/components/schemas/{prefix}.{{model}}")
    components = {f"{prefix}.{name}": sub for name, sub in schema.pop("$defs", {}).items()}
    required = list(schema.get("required", []))
    # Validated when the job is made (a file sent, or an upload named), so not by the model.
    required += [p.name for p in flow.file_params if p.required and p.name not in required]
    if required:
        schema["required"] = required
    components[f"{prefix}.Job"] = schema
    content = {"application/json": {"schema": _ref(f"{prefix}.Job")}}
    if flow.file_params:
        components[f"{prefix}.JobForm"] = form_schema(flow, schema)
        content[MULTIPART] = {"schema": _ref(f"{prefix}.JobForm")}
    operation = {
        "tags": ["workflows"],
        "summary": flow.spec.title or flow.name,
        "description": "\n\n".join(filter(None, [flow.spec.description, CREATE_DOC])),
        "operationId": f"create_job_{key}",
        "requestBody": {"required": True, "content": content},
        "responses": RESPONSES,
    }
    return operation, components


def form_schema(flow: Workflow, schema: dict[str, Any]) -> dict[str, Any]:
    """The multipart body: the files as binary parts, the JSON body's other fields as text."""
    files = {
        p.name: {
            "type": "string",
            "format": "binary",
            "description": p.description or f"The {p.type} file",
        }
        for p in flow.file_params
    }
    fields = {k: v for k, v in schema.get("properties", {}).items() if k not in files}
    if "webhook_events" in fields:
        fields["webhook_events"] = {
            "type": "string",
            "description": "Comma-separated: job.started,job.progress",
        }
    form: dict[str, Any] = {
        "type": "object",
        "title": f"{schema.get('title', flow.name)} (multipart)",
        "description": f"A job of {flow.name}: the files under their parameter names, the "
        "other fields as text parts.",
        "properties": {**files, **fields},
    }
    if schema.get("required"):
        form["required"] = schema["required"]
    return form
