"""The app factory. `create_app(settings)` builds everything; the lifespan owns the
long-lived things (database, HTTP client, websockets, dispatcher) and closes them in order."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from pathlib import Path

import anyio
import httpx
from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from fastapi.staticfiles import StaticFiles
from sqlalchemy.exc import SQLAlchemyError

from proxy import __version__
from proxy.api import build_router
from proxy.api.errors import install_error_handlers
from proxy.api.idempotency import Idempotency
from proxy.api.limits import BodyLimit
from proxy.api.links import ForwardedHeaders, Links
from proxy.api.native import job_view
from proxy.auth import Auth, session_secret
from proxy.batches import BatchService, BatchStore
from proxy.comfy import SocketState
from proxy.db import Database
from proxy.idempotency import IdempotencyStore
from proxy.jobs.backends import Backend, BackendPool
from proxy.jobs.bus import EventBus
from proxy.jobs.cleanup import ComfyCleanup, ComfyFolders, Retention
from proxy.jobs.dispatcher import Dispatcher
from proxy.jobs.service import JobService
from proxy.jobs.store import JobStore
from proxy.jobs.timings import TimingStore
from proxy.jobs.writer import JobWriter
from proxy.media.inputs import InputStore
from proxy.media.storage import output_store_for
from proxy.media.uploads import sweep_partial_uploads
from proxy.metrics import HttpMetrics, Metrics, stop_following
from proxy.modelfiles import DownloadManager, ManifestError
from proxy.modelfiles.presence import ModelPresence
from proxy.prompts import PromptTools
from proxy.replicas import (
    EventRelay,
    LeaseKeeper,
    Replica,
    announce,
    default_replica_id,
    live_replica_ids,
    shared_secret,
)
from proxy.services import Services
from proxy.settings import Settings
from proxy.webhooks import WebhookService
from proxy.workflows import WorkflowRegistry, load_registry
from proxy.workflows.sources import WorkflowSources

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


async def _model_files(
    stack: AsyncExitStack,
    settings: Settings,
    db: Database,
    pool: BackendPool,
    replica: str | None,
) -> tuple[DownloadManager | None, ModelPresence | None, str | None]:
    """Model downloads and presence checks. Optional: when they cannot start (a broken
    manifest, say) the proxy serves jobs anyway and the model-file routes say why."""
    # A download client of its own (long streams; nothing of ComfyUI's leaks there).
    http = await stack.enter_async_context(
        httpx.AsyncClient(timeout=httpx.Timeout(60.0, connect=15.0))
    )
    downloads = DownloadManager(
        db,
        settings,
        http,
        replica=replica,
        live_replicas=(lambda: live_replica_ids(db, settings.lease_ttl_s)) if replica else None,
    )
    try:
        await downloads.start()
    except (ManifestError, OSError, SQLAlchemyError) as exc:
        log.error("model files unavailable: %s", exc)
        return None, None, f"model files are unavailable: {exc}"
    stack.push_async_callback(downloads.close)
    return downloads, ModelPresence(downloads.manifest, pool.model_listing), None


def lifespan_for(
    settings: Settings, registry: WorkflowRegistry, auth: Auth, metrics: Metrics
) -> Callable[[FastAPI], AbstractAsyncContextManager[None]]:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with AsyncExitStack() as stack:
            app.state.services = await _start(stack, settings, registry, auth, metrics)
            yield

    return lifespan


async def _start(
    stack: AsyncExitStack,
    settings: Settings,
    registry: WorkflowRegistry,
    auth: Auth,
    metrics: Metrics,
) -> Services:
    """Open every long-lived service in order; the stack closes them in reverse, also when
    one of them fails to open."""
    for folder in (settings.data_dir, settings.outputs_path, settings.uploads_path):
        await anyio.Path(folder).mkdir(parents=True, exist_ok=True)
    await sweep_partial_uploads(settings.uploads_path)
    db = Database(
        settings.db_url,
        pool_size=settings.db_pool_size,
        max_overflow=settings.db_max_overflow,
        pool_timeout_s=settings.db_pool_timeout_s,
    )
    stack.push_async_callback(db.close)
    await db.migrate()
    # Replicas: with PostgreSQL any number of proxies share the database (`proxy.replicas`);
    # with SQLite this is the only one. A replica says it is alive before it starts anything.
    replicated = not db.is_sqlite
    me = Replica(settings.replica_id or default_replica_id())
    replica = me.id
    if replicated:
        await announce(db, me, settings.lease_ttl_s)
    http = await stack.enter_async_context(
        httpx.AsyncClient(
            timeout=httpx.Timeout(
                settings.comfy_http_timeout_s, connect=settings.comfy_connect_timeout_s
            )
        )
    )
    bus = EventBus()
    # Subscribed before the first job event (the dispatcher's start publishes some); the task
    # is stopped before the subscription ends (the stack closes in reverse).
    metric_events = await stack.enter_async_context(bus.subscribe())
    stack.push_async_callback(
        stop_following, asyncio.create_task(metrics.follow(metric_events), name="metrics")
    )
    store = JobStore(db)
    writer = JobWriter(store, bus)
    outputs = await stack.enter_async_context(output_store_for(settings))  # disk or bucket
    # Inputs go to the bucket too when the outputs do: any replica may hand them to ComfyUI.
    inputs = InputStore(db, settings.uploads_path, settings.max_upload_bytes, outputs)
    client_id = await stable_client_id(settings.data_dir)
    dispatcher: Dispatcher | None = None

    sources: WorkflowSources | None = None

    keeper: LeaseKeeper | None = None

    async def on_state(backend: Backend, state: SocketState) -> None:
        if sources is not None and state is SocketState.CONNECTED:
            sources.on_backend_connected(backend)  # its node schemas may have changed
        if keeper is not None:
            keeper.kick()  # the other replicas count the connected backends
        if dispatcher is not None:
            await dispatcher.on_backend_state(backend, state)

    pool = BackendPool.build(settings, http, client_id, on_state)
    metrics.watch(pool)
    stack.push_async_callback(pool.close)
    if replicated:
        for backend in pool.backends:
            backend.mine = False  # until its lease is ours (below)
        relay = EventRelay(
            db=db,
            replica=replica,
            bus=bus,
            store=store,
            writer=writer,
            on_remote=lambda kind, job: dispatcher.on_remote(kind, job) if dispatcher else None,
        )
        await relay.start()
        stack.push_async_callback(relay.close)
        # One secret for cookies and signed URLs on every replica (unless configured).
        if not settings.session_secret:
            local = session_secret(None, settings.data_dir).decode()
            auth.rekey((await shared_secret(db, "session", local)).encode())
    # Hot reload of WORKFLOWS_DIR, node schemas from the backends, ComfyUI's saved workflows.
    sources = WorkflowSources(registry, settings, pool)
    await sources.start()
    stack.push_async_callback(sources.close)
    # Takes a job's leftovers out of ComfyUI once it has ended or is deleted; told by the
    # writer, closed before the pool it talks through.
    cleanup = ComfyCleanup(pool, ComfyFolders.from_settings(settings))
    writer.observers.append(cleanup)
    stack.push_async_callback(cleanup.close)
    # Job callbacks: subscribed to the bus and observing the writer before the dispatcher's
    # start publishes any job event; closed after the dispatcher (what it ends is enqueued).
    # A payload is the job as the native API shows it, its URLs absolute, the video's also
    # signed (for the job's owner) when keys are configured.
    signing = auth.urls if auth.keys.enabled else None
    webhooks = WebhookService(
        settings=settings,
        db=db,
        jobs=store,
        bus=bus,
        render=lambda job, base: job_view(job, Links(base, signing)),
    )
    stack.push_async_callback(webhooks.close)  # first: it also undoes a start that failed
    if replicated and not settings.webhook_secret:
        local = await webhooks.signer.kept_locally()
        webhooks.signer.use(await shared_secret(db, "webhook", local), "the database")
    await webhooks.start()
    writer.observers.append(webhooks)
    writer.end_records.append(webhooks.record_end)
    timings = TimingStore(db)
    dispatcher = Dispatcher(
        settings=settings,
        store=store,
        writer=writer,
        pool=pool,
        registry=registry,
        outputs=outputs,
        timings=timings,
    )
    dispatcher.on_database_error = lambda: metrics.database_error("dispatcher")
    jobs = JobService(
        settings=settings,
        store=store,
        writer=writer,
        bus=bus,
        registry=registry,
        dispatcher=dispatcher,
        outputs=outputs,
        inputs=inputs,
    )
    problems: dict[str, str] = {}
    downloads, presence, problem = await _model_files(
        stack, settings, db, pool, replica if replicated else None
    )
    if problem:
        problems["model_files"] = problem
    # Prompt tools talk to an LLM: their own HTTP client, so nothing of ComfyUI's leaks there.
    llm_http = await stack.enter_async_context(httpx.AsyncClient())
    prompt_tools = PromptTools.from_settings(settings, http=llm_http, db=db)
    batches = BatchService(
        settings=settings, store=BatchStore(db), jobs=jobs, bus=bus, outputs=outputs
    )
    await batches.start()
    stack.push_async_callback(batches.close)
    pool.start()
    await dispatcher.start()
    stack.push_async_callback(dispatcher.close)
    if replicated:

        async def gained(backend: Backend) -> None:
            backend.socket.start()
            dispatcher.adopt(backend)

        keeper = LeaseKeeper(
            db=db,
            pool=pool,
            replica=me,
            ttl_s=settings.lease_ttl_s,
            client_id=client_id,
            on_gained=gained,
            on_lost=dispatcher.drop,
        )
        # Closed first: its backends are handed to the other replicas before anything stops.
        await keeper.start()
        stack.push_async_callback(keeper.close)
        leases = keeper
        dispatcher.held_elsewhere = lambda url: url in leases.held
    else:
        log.info("SQLite: a single proxy process (for replicas, use PostgreSQL: DATABASE_URL)")
    if not settings.output_store and replicated:
        log.warning(
            "outputs are kept on this replica's disk (%s): replicas on other machines cannot "
            "serve them; set OUTPUT_STORE=s3://bucket/prefix (or share OUTPUT_DIR)",
            settings.outputs_path,
        )
    retention: Retention | None = None
    if settings.job_retention_days is not None:
        retention = Retention(jobs, settings.job_retention_days)
        retention.start()
        stack.push_async_callback(retention.close)
    log.info(
        "FastWAN proxy %s ready: workflows=%s backends=%s%s",
        __version__,
        ",".join(registry.names()),
        ",".join(settings.comfyui_urls),
        " (STAND-IN: synthetic test-pattern videos)" if settings.standin else "",
    )
    return Services(
        settings=settings,
        auth=auth,
        db=db,
        registry=registry,
        workflow_sources=sources,
        bus=bus,
        pool=pool,
        dispatcher=dispatcher,
        jobs=jobs,
        timings=timings,
        idempotency=IdempotencyStore(db),
        outputs=outputs,
        inputs=inputs,
        batches=batches,
        prompt_tools=prompt_tools,
        downloads=downloads,
        presence=presence,
        metrics=metrics,
        webhooks=webhooks,
        problems=problems,
        cleanup=cleanup,
        retention=retention,
        replica=replica,
        leases=keeper,
    )


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings.from_env()
    # Read here, before serving: the routers' request models are derived from it, and a bad
    # key entry must stop the start, not the first request.
    registry = load_registry(settings.workflows_dir)
    auth = Auth.from_settings(
        settings.api_keys,
        settings.admin_api_keys,
        session_secret(settings.session_secret, settings.data_dir),
        settings.session_ttl_s,
        settings.signed_url_ttl_s,
    )
    # Made here, not in the lifespan: the HTTP middleware below needs it before any start.
    metrics = Metrics()
    app = FastAPI(
        title="FastWAN proxy",
        version=__version__,
        description=(
            "A durable async API in front of ComfyUI for FastWAN 2.2-5B video generation, "
            "with drop-in compatibility for five existing video APIs."
        ),
        lifespan=lifespan_for(settings, registry, auth, metrics),
        # Served by the API router below, behind the same keys as everything else.
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )
    install_error_handlers(app, on_database_error=lambda: metrics.database_error("api"))
    app.add_middleware(Idempotency)  # inside the body limit: it reads bounded bodies
    app.add_middleware(BodyLimit, max_bytes=settings.max_json_bytes)
    app.add_middleware(HttpMetrics, metrics=metrics)
    # Outermost but CORS: every layer inside sees the request as its client sent it.
    app.add_middleware(ForwardedHeaders, trusted=settings.trusted_proxies)
    app.include_router(build_router(registry, settings))
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["*"],
            allow_headers=[
                "Authorization",
                "X-API-Key",
                "Content-Type",
                "Last-Event-ID",
                "Idempotency-Key",
                "Prefer",
            ],
        )
    if STATIC_DIR.is_dir():
        app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    return app
