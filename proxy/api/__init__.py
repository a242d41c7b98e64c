"""HTTP surfaces, assembled in one place: the native API and one thin router per seed.

Routers whose request models are derived from the workflows are built from the registry (one
object for the app's life, changed in place by a reload). The OpenAPI document lists a path per
served workflow (`proxy.api.workflows.WorkflowDocs`), made again after a reload.
Every route depends on `authenticate` (open routes are named in `proxy.api.auth`), the
OpenAPI document and its pages included."""

from typing import Any

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse

from proxy.api import (
    auth,
    batches,
    events,
    fastwan,
    health,
    metrics,
    modelfiles,
    native,
    portal,
    prompts,
    scenes,
    wan21,
    webhooks,
    workflows,
)
from proxy.settings import Settings
from proxy.workflows import WorkflowRegistry


def _docs(document: workflows.WorkflowDocs) -> APIRouter:
    router = APIRouter(include_in_schema=False)

    @router.get("/openapi.json")
    async def openapi(request: Request) -> JSONResponse:
        app: FastAPI = request.app
        schema: dict[str, Any] = document.document(app)  # with a path per workflow
        return JSONResponse(schema)

    @router.get("/docs")
    async def docs() -> HTMLResponse:
        return get_swagger_ui_html(openapi_url="/openapi.json", title="FastWAN proxy: API docs")

    return router


def build_router(registry: WorkflowRegistry, settings: Settings) -> APIRouter:
    default = settings.default_workflow
    per_workflow, document = workflows.build(registry)
    # The router tries routes in this order, so the most polled come first: the FastWAN
    # seed's `/status/{id}` (each route tried before it costs every poll a few microseconds).
    surfaces = [
        fastwan.build(registry, default),
        auth.router,
        health.router,
        metrics.router,
        native.build(registry, default),
        events.router,
        per_workflow,
        prompts.router,
        modelfiles.router,
        wan21.build(registry),
        batches.router,
        webhooks.router,
        portal.build(registry, default, settings.max_batch_size),
        scenes.build(registry, default),
        _docs(document),
    ]
    router = APIRouter(dependencies=[Depends(auth.authenticate)])
    for surface in surfaces:
        router.include_router(surface)
    return router
