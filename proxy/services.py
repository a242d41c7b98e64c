"""The long-lived things the lifespan owns, as one typed container handed to routes through
one dependency (`get_services`); tests replace it, or one of the accessors built on it in
`proxy.api.deps`, through `app.dependency_overrides`."""

from __future__ import annotations

from dataclasses import dataclass, field

from starlette.requests import HTTPConnection

from proxy.auth import Auth
from proxy.batches import BatchService
from proxy.db import Database
from proxy.idempotency import IdempotencyStore
from proxy.jobs.backends import BackendPool
from proxy.jobs.bus import EventBus
from proxy.jobs.cleanup import ComfyCleanup, Retention
from proxy.jobs.dispatcher import Dispatcher
from proxy.jobs.service import JobService
from proxy.jobs.timings import TimingStore
from proxy.media.inputs import InputStore
from proxy.media.storage import OutputStore
from proxy.metrics import Metrics
from proxy.modelfiles import DownloadManager
from proxy.modelfiles.presence import ModelPresence
from proxy.prompts import PromptTools
from proxy.replicas import LeaseKeeper
from proxy.settings import Settings
from proxy.webhooks import WebhookService
from proxy.workflows import WorkflowRegistry
from proxy.workflows.sources import WorkflowSources


@dataclass
class Services:
    settings: Settings
    auth: Auth
    db: Database
    registry: WorkflowRegistry
    # Hot reload, node schemas from the backends, imports of ComfyUI's saved workflows.
    workflow_sources: WorkflowSources
    bus: EventBus
    pool: BackendPool
    dispatcher: Dispatcher
    jobs: JobService
    timings: TimingStore
    # Answers kept for Idempotency-Key retries (proxy.api.idempotency).
    idempotency: IdempotencyStore
    outputs: OutputStore
    inputs: InputStore
    batches: BatchService
    prompt_tools: PromptTools
    # Model files need the manifest (comfyui/models.json): when it cannot be loaded the proxy
    # still serves jobs, and these say why model-file routes answer 503.
    downloads: DownloadManager | None
    presence: ModelPresence | None
    # Made by the app factory (its HTTP middleware counts requests before any lifespan).
    metrics: Metrics
    # Job callbacks: the outbox of signed deliveries, and the per-job targets.
    webhooks: WebhookService
    problems: dict[str, str] = field(default_factory=dict)
    # Takes jobs' leftovers out of ComfyUI; deletes old finished jobs (JOB_RETENTION_DAYS).
    cleanup: ComfyCleanup | None = None
    retention: Retention | None = None
    # This process's name among the replicas, and with PostgreSQL its leases on the
    # backends (None with SQLite: one process drives every backend).
    replica: str = ""
    leases: LeaseKeeper | None = None


def services_of(connection: HTTPConnection) -> Services:
    """The app's services (HTTP requests and websockets alike)."""
    services: Services = connection.app.state.services
    return services


async def get_services(connection: HTTPConnection) -> Services:
    """`services_of`, as the routes' dependency: async, so FastAPI calls it in the event
    loop (a plain function dependency costs a thread-pool round trip per request)."""
    return services_of(connection)
