"""Prometheus metrics, served at `GET /metrics` (admin-only when keys are configured).

Every app has its own `CollectorRegistry` (held by `Metrics`, on the services container),
never the process-wide default one, so several apps in one process (tests) do not clash.

Read at scrape time (nothing kept between scrapes):

- `fastwan_jobs{status, workflow}` (gauge): jobs in the store, by status and workflow
  (one GROUP BY query per scrape).
- `fastwan_queue_depth` (gauge): queued jobs not yet given to a backend (waiting in the
  proxy's own queue; a job already waiting in a ComfyUI queue is in-flight there).
- `fastwan_backend_up{backend}` (gauge): 1 when the backend can take jobs now, else 0.
- `fastwan_backend_inflight{backend}` (gauge): jobs handed to the backend and not finished.
- `fastwan_backend_jobs_done_total{backend}` (counter): jobs the backend completed since the
  proxy started.

Counted as things happen (since the proxy started):

- `fastwan_backend_jobs_failed_total{backend}` (counter): jobs that failed while on that
  backend.
- `fastwan_job_duration_seconds{workflow, status}` (histogram): from a job's start on a
  backend to its end, by how it ended (completed, failed, cancelled).
- `fastwan_job_queue_seconds{workflow}` (histogram): from (re)queueing to running on a
  backend, once per run.
- `fastwan_job_stage_seconds{workflow, stage}` (histogram): time a running job spent in
  each stage the progress tracker reports ("loading models", "sampling", "decoding",
  "storing output", ...), observed when the stage changes or the job stops running.
- `fastwan_http_requests_total{method, route, status}` (counter): HTTP requests by route
  template (`/api/jobs/{job_id}`, never the raw path, so ids do not make a series each;
  `unmatched` for paths no route serves).
- `fastwan_http_request_duration_seconds{method, route}` (histogram): time until the
  response starts (its status and headers), so hours-long event streams and large downloads
  do not swamp the latencies.
- `fastwan_database_errors_total{source}` (counter): SQLAlchemy errors seen by the API's
  error handlers (`api`), the dispatcher (`dispatcher`) and the metrics scrape itself
  (`metrics`); increment it with `Metrics.database_error(source)`.

The job histograms come from the job events on the bus, read by one subscriber task that the
lifespan owns (`Metrics.follow`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable, Iterator
from contextlib import suppress
from dataclasses import dataclass
from datetime import datetime

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.exposition import choose_encoder
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import and_, case, func, select
from sqlalchemy.exc import SQLAlchemyError
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from proxy.db import Database
from proxy.jobs.backends import BackendPool
from proxy.jobs.bus import JobEvent
from proxy.jobs.models import Job, JobStatus
from proxy.jobs.store import jobs_table

log = logging.getLogger("proxy.metrics")

# Video jobs take seconds (the stand-in) to the better part of an hour (a slow GPU).
JOB_BUCKETS = (1, 5, 10, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200)
QUEUE_BUCKETS = (0.1, 0.5, 1, 5, 10, 30, 60, 120, 300, 600, 1800, 3600)
STAGE_BUCKETS = (0.1, 0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600, 1800)
UNMATCHED = "unmatched"
# Any other method a client sends is counted as "other": one series per made-up word would
# let a client grow the registry without bound.
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


@dataclass
class _Seen:
    """What the subscriber last saw of one active job."""

    status: JobStatus
    stage: str | None
    stage_since: datetime | None  # None: entered before the subscriber saw the job
    queued_since: datetime | None


class _ScrapeCollector(Collector):
    """The metrics read when scraped: the pool's state now, and the store's counts fetched
    (asynchronously) by `Metrics.refresh` just before."""

    def __init__(self) -> None:
        self.pool: BackendPool | None = None
        # (status, workflow, count, queued without a backend); None when the store did not
        # answer, so stale counts are never served as fresh.
        self.counts: list[tuple[str, str, int, int]] | None = None

    def collect(self) -> Iterable[Metric]:
        yield from self._jobs()
        yield from self._backends()

    def _jobs(self) -> Iterator[Metric]:
        if self.counts is None:
            return
        jobs = GaugeMetricFamily(
            "fastwan_jobs",
            "Jobs in the store by status and workflow",
            labels=["status", "workflow"],
        )
        depth = 0
        for status, workflow, count, waiting in self.counts:
            jobs.add_metric([status, workflow], count)
            depth += waiting
        yield jobs
        yield GaugeMetricFamily(
            "fastwan_queue_depth", "Queued jobs not yet given to a backend", value=depth
        )

    def _backends(self) -> Iterator[Metric]:
        up = GaugeMetricFamily(
            "fastwan_backend_up", "1 when the backend can take jobs now", labels=["backend"]
        )
        inflight = GaugeMetricFamily(
            "fastwan_backend_inflight",
            "Jobs handed to the backend, not finished",
            labels=["backend"],
        )
        done = CounterMetricFamily(
            "fastwan_backend_jobs_done",
            "Jobs the backend completed since the proxy started",
            labels=["backend"],
        )
        for backend in self.pool.backends if self.pool is not None else []:
            up.add_metric([backend.name], 1 if backend.up else 0)
            inflight.add_metric([backend.name], len(backend.inflight))
            done.add_metric([backend.name], backend.jobs_done)
        yield from (up, inflight, done)


class Metrics:
    """The app's metrics: its own registry, the instruments others update, and the job-event
    subscriber's memory of active jobs (owned here, so it lives and dies with the app)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self._scrape = _ScrapeCollector()
        self.registry.register(self._scrape)
        self.http_requests = Counter(
            "fastwan_http_requests",
            "HTTP requests by route template",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.http_latency = Histogram(
            "fastwan_http_request_duration_seconds",
            "Time until the response starts, by route template",
            ["method", "route"],
            registry=self.registry,
        )
        self.database_errors = Counter(
            "fastwan_database_errors",
            "SQLAlchemy errors seen, by where",
            ["source"],
            registry=self.registry,
        )
        self.backend_failed = Counter(
            "fastwan_backend_jobs_failed",
            "Jobs that failed while on the backend",
            ["backend"],
            registry=self.registry,
        )
        self.job_duration = Histogram(
            "fastwan_job_duration_seconds",
            "From a job's start on a backend to its end",
            ["workflow", "status"],
            buckets=JOB_BUCKETS,
            registry=self.registry,
        )
        self.job_queue = Histogram(
            "fastwan_job_queue_seconds",
            "From (re)queueing to running on a backend",
            ["workflow"],
            buckets=QUEUE_BUCKETS,
            registry=self.registry,
        )
        self.job_stage = Histogram(
            "fastwan_job_stage_seconds",
            "Time a running job spent in each stage",
            ["workflow", "stage"],
            buckets=STAGE_BUCKETS,
            registry=self.registry,
        )
        for source in ("api", "dispatcher", "metrics"):
            self.database_errors.labels(source=source)  # present at 0 from the first scrape
        self._seen: dict[str, _Seen] = {}

    # -- updated by others ------------------------------------------------------------------

    def database_error(self, source: str) -> None:
        """Count one SQLAlchemy error seen at `source` ("api", "dispatcher", ...)."""
        self.database_errors.labels(source=source).inc()

    def watch(self, pool: BackendPool) -> None:
        """Report this pool's backends (the lifespan builds the pool after the app)."""
        self._scrape.pool = pool
        for backend in pool.backends:
            self.backend_failed.labels(backend=backend.name)

    # -- scraping ---------------------------------------------------------------------------

    async def refresh(self, db: Database) -> None:
        """Fetch the store's job counts for the next `render` (one GROUP BY query)."""
        waiting = and_(
            jobs_table.c.status == JobStatus.QUEUED.value, jobs_table.c.backend.is_(None)
        )
        query = select(
            jobs_table.c.status,
            jobs_table.c.workflow,
            func.count(),
            func.coalesce(func.sum(case((waiting, 1), else_=0)), 0),
        ).group_by(jobs_table.c.status, jobs_table.c.workflow)
        try:
            async with db.engine.connect() as conn:
                rows = (await conn.execute(query)).all()
        except SQLAlchemyError as exc:
            log.warning("metrics: the job counts could not be read: %s", exc)
            self.database_error("metrics")
            self._scrape.counts = None
            return
        self._scrape.counts = [(str(s), str(w), int(n), int(q)) for s, w, n, q in rows]

    def render(self, accept: str | None) -> tuple[bytes, str]:
        """The exposition in the format the scraper asks for (Prometheus text by default,
        OpenMetrics when its Accept says so), and its content type."""
        encoder, content_type = choose_encoder(accept or "")
        return encoder(self.registry), content_type

    # -- job events -------------------------------------------------------------------------

    async def follow(self, queue: asyncio.Queue[JobEvent]) -> None:
        """Observe job events until cancelled (run as a task by the lifespan)."""
        while True:
            event = await queue.get()
            if not event.local:
                continue  # each replica counts the jobs it runs
            try:
                self.observe(event)
            except Exception:  # a metrics defect must not end the subscriber
                log.exception("metrics: job event %s not observed", event.id)

    def observe(self, event: JobEvent) -> None:
        """Update the job histograms and failure counts from one job event."""
        job = event.job
        if event.kind == "deleted":
            self._seen.pop(job.id, None)
            return
        at = job.updated_at
        seen = self._seen.get(job.id)
        if seen is None:
            if job.status.active:
                # First sight: created now, or active since before a restart. When it entered
                # its queue or its stage is then unknown, unless it has only just been queued.
                fresh = job.status is JobStatus.QUEUED
                self._seen[job.id] = _Seen(job.status, job.stage, None, at if fresh else None)
            return
        stage_over = (
            seen.status is JobStatus.RUNNING
            and bool(seen.stage)
            and (job.stage != seen.stage or job.status is not JobStatus.RUNNING)
        )
        if stage_over and seen.stage and seen.stage_since is not None:
            self.job_stage.labels(workflow=job.workflow, stage=seen.stage).observe(
                _seconds(seen.stage_since, at)
            )
        if job.stage != seen.stage or job.status is not seen.status:
            seen.stage_since = at
        seen.stage = job.stage
        if job.status is not seen.status:
            self._status_changed(job, seen, at)

    def _status_changed(self, job: Job, seen: _Seen, at: datetime) -> None:
        seen.status = job.status
        if job.status is JobStatus.QUEUED:
            seen.queued_since = at
        elif job.status is JobStatus.RUNNING and seen.queued_since is not None:
            self.job_queue.labels(workflow=job.workflow).observe(_seconds(seen.queued_since, at))
            seen.queued_since = None
        if job.status.active:
            return
        self._seen.pop(job.id, None)
        if not job.status.finished:
            return
        if job.started_at is not None:
            self.job_duration.labels(workflow=job.workflow, status=job.status.value).observe(
                _seconds(job.started_at, job.finished_at or at)
            )
        if job.status is JobStatus.FAILED and job.backend:
            self.backend_failed.labels(backend=job.backend).inc()


def _seconds(since: datetime, until: datetime) -> float:
    # Clocks of two writers (or a clock step) must not make a negative observation.
    return max(0.0, (until - since).total_seconds())


class HttpMetrics:
    """ASGI middleware counting HTTP requests and timing them by route template (the route
    the router matched, set in the scope on the way in, so read once the app has answered)."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        method = scope["method"] if scope["method"] in METHODS else "other"
        status = 500  # unless the app starts a response: an exception escaped it
        timed = False

        def observe_latency() -> None:
            nonlocal timed
            timed = True
            self.metrics.http_latency.labels(method=method, route=_route_of(scope)).observe(
                time.perf_counter() - start
            )

        async def timed_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
                observe_latency()
            await send(message)

        try:
            await self.app(scope, receive, timed_send)
        finally:
            if not timed:
                observe_latency()
            self.metrics.http_requests.labels(
                method=method, route=_route_of(scope), status=str(status)
            ).inc()


def _route_of(scope: Scope) -> str:
    path = getattr(scope.get("route"), "path", None)
    return path if isinstance(path, str) and path else UNMATCHED


async def stop_following(task: asyncio.Task[None]) -> None:
    task.cancel()
    with suppress(asyncio.CancelledError):
        await task
