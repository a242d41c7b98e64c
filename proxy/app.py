"""The app factory. `create_app(settings)` builds everything; the lifespan owns the
long-lived things (database, HTTP client, websockets, dispatcher) and closes them in order."""

from __future__ import annotations

import logging
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import httpx
from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from proxy import __version__
from proxy.api import build_router
from proxy.api.errors import install_error_handlers
from proxy.batches import BatchService, BatchStore  # batches & scenes (wiring)
from proxy.comfy import SocketState
from proxy.db import Database
from proxy.errors import ComfyError
from proxy.jobs.backends import Backend, BackendPool
from proxy.jobs.bus import EventBus
from proxy.jobs.dispatcher import Dispatcher
from proxy.jobs.service import JobService
from proxy.jobs.store import JobStore
from proxy.jobs.writer import JobWriter
from proxy.media.storage import OutputStore
from proxy.media.uploads import sweep_partial_uploads
from proxy.modelfiles import DownloadManager
from proxy.modelfiles.manifest import Manifest
from proxy.modelfiles.presence import compute_presence
from proxy.prompts import PromptTools
from proxy.services import Services
from proxy.settings import Settings
from proxy.workflows import load_registry

log = logging.getLogger("proxy")

STATIC_DIR = Path(__file__).parent / "static"


async def stable_client_id(data_dir: Path) -> str:
    """The websocket client id, kept across restarts: ComfyUI sends a prompt's events only to
    the client id it was submitted with, so re-attached jobs need the same one."""
    path = anyio.Path(data_dir / "comfy-client-id")
    if await path.exists():
        value = (await path.read_text()).strip()
        if value:
            return value
    value = f"fastwan-proxy-{uuid.uuid4().hex[:12]}"
    await path.write_text(value + "\n")
    return value


async def model_listing(pool: BackendPool, manifest: Manifest) -> dict[str, list[str]]:
    """The model files ComfyUI itself reports, per folder the manifest uses (asked, not
    guessed: ComfyUI's GET /models/{folder}). A folder ComfyUI lacks counts as empty."""
    backend = (pool.up() or pool.backends)[0]
    folders = sorted({m.folder for m in manifest.models})
    return {f: (await backend.client.list_models(f)) or [] for f in folders}


async def workflow_readiness(pool: BackendPool, manifest: Manifest) -> dict[str, dict[str, Any]]:
    """Per workflow: whether every model file it needs is present in ComfyUI."""
    try:
        listing: dict[str, list[str]] | None = await model_listing(pool, manifest)
    except ComfyError:
        listing = None  # unknown, not absent
    report = compute_presence(manifest, listing)
    result = {}
    for name in manifest.workflows:
        readiness = report.workflows[name]
        result[name] = {
            "ready": readiness.ready,
            "missing": readiness.missing,
            "files": [
                {
                    "id": m.id,
                    "filename": m.filename,
                    "folder": m.folder,
                    "present": report.models.get(m.id),
                    "approx_size": m.approx_size,
                }
                for m in manifest.required_for(name)
            ],
        }
    return result


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    settings: Settings = app.state.settings
    for folder in (settings.data_dir, settings.outputs_path, settings.uploads_path):
        await anyio.Path(folder).mkdir(parents=True, exist_ok=True)
    await sweep_partial_uploads(settings.uploads_path)
    db = Database(settings.db_url)
    await db.create_all()
    registry = load_registry(settings.workflows_dir)
    http = httpx.AsyncClient(
        timeout=httpx.Timeout(
            settings.comfy_http_timeout_s, connect=settings.comfy_connect_timeout_s
        )
    )
    bus = EventBus()
    store = JobStore(db)
    writer = JobWriter(store, bus)
    outputs = OutputStore(settings.outputs_path)
    await outputs.prepare()
    client_id = await stable_client_id(settings.data_dir)
    dispatcher_ref: list[Dispatcher] = []

    async def on_state(backend: Backend, state: SocketState) -> None:
        if dispatcher_ref:
            await dispatcher_ref[0].on_backend_state(backend, state)

    pool = BackendPool.build(settings, http, client_id, on_state)
    dispatcher = Dispatcher(
        settings=settings, store=store, writer=writer, pool=pool, registry=registry, outputs=outputs
    )
    dispatcher_ref.append(dispatcher)
    jobs = JobService(
        settings=settings,
        store=store,
        writer=writer,
        bus=bus,
        registry=registry,
        dispatcher=dispatcher,
        outputs=outputs,
    )
    services = Services(
        settings=settings,
        db=db,
        http=http,
        registry=registry,
        bus=bus,
        pool=pool,
        dispatcher=dispatcher,
        jobs=jobs,
        outputs=outputs,
    )
    app.state.services = services
    # Model files: a download client of its own (long streams; nothing of ComfyUI's leaks).
    downloads_http = httpx.AsyncClient(timeout=httpx.Timeout(60.0, connect=15.0))
    downloads = DownloadManager(db, settings, downloads_http)
    await downloads.start()
    app.state.downloads = downloads
    app.state.model_presence = lambda: model_listing(pool, downloads.manifest)
    services.extras["downloads"] = downloads
    services.extras["presence"] = lambda: workflow_readiness(pool, downloads.manifest)
    # Prompt tools talk to an LLM: their own HTTP client, so nothing of ComfyUI's leaks there.
    llm_http = httpx.AsyncClient()
    app.state.prompt_tools = PromptTools.from_settings(settings, http=llm_http, db=db)
    # -- batches & scenes (wiring) --
    batches = BatchService(
        settings=settings, store=BatchStore(db), jobs=jobs, bus=bus, outputs=outputs
    )
    services.extras["batches"] = batches
    app.state.save_scene_session = batches.save_scene_session
    await batches.start()
    # -- end batches & scenes --
    pool.start()
    await dispatcher.start()
    log.info(
        "FastWAN proxy %s ready: workflows=%s backends=%s%s",
        __version__,
        ",".join(registry.names()),
        ",".join(settings.comfyui_urls),
        " (STAND-IN: synthetic test-pattern videos)" if settings.standin else "",
    )
    try:
        yield
    finally:
        await batches.close()  # batches & scenes (wiring)
        await downloads.close()
        await downloads_http.aclose()
        await dispatcher.close()
        await pool.close()
        await http.aclose()
        await llm_http.aclose()
        await db.close()


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings.from_env()
    app = FastAPI(
        title="FastWAN proxy",
        version=__version__,
        description=(
            "A durable async API in front of ComfyUI for FastWAN 2.2-5B video generation, "
            "with drop-in compatibility for five existing video APIs."
        ),
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.index_html = STATIC_DIR / "index.html"
    install_error_handlers(app)
    app.include_router(build_router())
    if STATIC_DIR.is_dir():
        app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    return app
