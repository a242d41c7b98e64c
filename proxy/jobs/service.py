"""What the API surfaces may do with jobs. Every surface (native and compatibility) goes
through this one service, so they all create and read the same jobs."""

from __future__ import annotations

import asyncio
import builtins
import logging
import time
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any

from proxy.auth import Principal
from proxy.errors import ComfyError, Conflict, NotFound, TooManyJobs
from proxy.jobs.bus import EventBus
from proxy.jobs.dispatcher import Dispatcher
from proxy.jobs.models import ACTIVE, STARTABLE, Attempt, Job, JobStatus
from proxy.jobs.store import JobStore, utcnow
from proxy.jobs.writer import JobWriter
from proxy.media.inputs import InputStore
from proxy.media.storage import OutputStore, StoredFile
from proxy.settings import Settings
from proxy.workflows import WorkflowRegistry

# A stop that takes longer than this is logged with where it waited.
SLOW_STOP_S = 2.0

log = logging.getLogger("proxy.jobs")


class JobService:
    def __init__(
        self,
        *,
        settings: Settings,
        store: JobStore,
        writer: JobWriter,
        bus: EventBus,
        registry: WorkflowRegistry,
        dispatcher: Dispatcher,
        outputs: OutputStore,
        inputs: InputStore,
    ) -> None:
        self.settings = settings
        self.inputs = inputs
        self.store = store
        self.writer = writer
        self.bus = bus
        self.registry = registry
        self.dispatcher = dispatcher
        self.outputs = outputs
        # Count-then-insert under one lock, so concurrent requests of one client cannot all
        # pass its limit together (one proxy process per database; see the README).
        self._admission = asyncio.Lock()

    async def check_capacity(self, client_key: str, max_active: int, adding: int = 1) -> None:
        """TooManyJobs when `adding` more jobs would take the client past `max_active`
        queued or running jobs."""
        active = await self.store.count(statuses=ACTIVE, client_key=client_key)
        if active + adding > max_active:
            more = f" and this request adds {adding}" if adding > 1 else ""
            raise TooManyJobs(
                f"Too many concurrent requests: {active} of your jobs are still running{more} "
                f"(limit {max_active}, MAX_ACTIVE_JOBS_PER_CLIENT). Please try again when "
                "one finishes."
            )

    async def create(
        self,
        workflow: str,
        values: dict[str, Any],
        *,
        inputs: dict[str, dict[str, Any]] | None = None,
        surface: str = "native",
        client_key: str | None = None,
        max_active: int | None = None,
        start: bool = True,
        batch_id: str | None = None,
        label: str | None = None,
        request: dict[str, Any] | None = None,
        job_id: str | None = None,
    ) -> Job:
        """Validate, resolve (random seed drawn and stored) and persist a job; queue it.

        `job_id` lets a caller that records the id elsewhere first (a batch) choose it."""
        flow = self.registry.get(workflow)
        files = {name: info["upload_name"] for name, info in (inputs or {}).items()}
        params = flow.resolve(flow.fit_to_inputs(values, inputs or {}), files)
        if start:
            self.require_backend()
        now = utcnow()
        status = JobStatus.QUEUED if start else JobStatus.PENDING
        job = Job(
            id=job_id or str(uuid.uuid4()),
            workflow=flow.name,
            status=status,
            params=params,
            request=request if request is not None else values,
            inputs=inputs or {},
            surface=surface,
            client_key=client_key,
            batch_id=batch_id,
            label=label,
            message="Waiting for a GPU" if start else "Created; not started",
            attempt=1 if start else 0,
            attempts=[Attempt(number=1, status=status, started_at=now)] if start else [],
            created_at=now,
            updated_at=now,
        )
        async with self.admitting(client_key, max_active):
            await self.writer.create(job)
        if start:
            self.dispatcher.wake()
        return job

    def require_backend(self) -> None:
        """NoBackend when no ComfyUI has been reachable for NO_BACKEND_TIMEOUT_S: a job
        queued now would only wait for nothing, so it is refused until one is back."""
        self.dispatcher.check_accepting()

    @asynccontextmanager
    async def admitting(
        self, client_key: str | None, max_active: int | None, adding: int = 1
    ) -> AsyncIterator[None]:
        """Hold the admission of `adding` active jobs for `client_key` while the block puts
        them in place: count-then-insert under one lock, so concurrent requests of one client
        cannot all pass its limit together (one proxy process per database)."""
        if max_active is None or client_key is None:
            yield
            return
        async with self._admission:
            await self.check_capacity(client_key, max_active, adding)
            yield

    async def get(self, job_id: str, caller: Principal | None = None) -> Job:
        """The job; NotFound also when `caller` may not see it (its existence is not
        revealed). No caller: the proxy itself."""
        job = await self.store.get(job_id)
        if job is None or (caller is not None and not caller.can_see(job.client_key)):
            raise NotFound(f"no job with id {job_id!r}")
        return self.writer.current(job)

    async def list(
        self,
        *,
        statuses: Sequence[JobStatus] | None = None,
        batch_id: str | None = None,
        limit: int | None = None,
        offset: int = 0,
        caller: Principal | None = None,
    ) -> list[Job]:
        jobs = await self.store.list(
            statuses=statuses,
            batch_id=batch_id,
            limit=limit,
            offset=offset,
            client_key=caller.scope if caller is not None else None,
        )
        return [self.writer.current(job) for job in jobs]

    async def count(
        self, *, statuses: Sequence[JobStatus] | None = None, caller: Principal | None = None
    ) -> int:
        return await self.store.count(
            statuses=statuses, client_key=caller.scope if caller is not None else None
        )

    async def start(
        self, job_id: str, caller: Principal | None = None, *, max_active: int | None = None
    ) -> Job:
        """Start a pending job, or run a stopped or failed one again as a new attempt (within
        the caller's active-job limit)."""
        job = await self.get(job_id, caller)
        if job.status not in STARTABLE:
            raise Conflict(
                f"job {job_id} is {job.status.value}; only pending, cancelled or failed jobs "
                "can be started",
                status=job.status.value,
            )
        self.require_backend()
        now = utcnow()
        number = job.attempt + 1
        attempts = [*job.attempts, Attempt(number=number, status=JobStatus.QUEUED, started_at=now)]
        async with self.admitting(job.client_key, max_active):
            updated = await self._requeue(job_id, number, attempts)
        if updated is None:
            raise Conflict(f"job {job_id} changed state meanwhile; try again")
        self.dispatcher.wake()
        return updated

    async def _requeue(
        self, job_id: str, number: int, attempts: builtins.list[Attempt]
    ) -> Job | None:
        return await self.writer.update(
            job_id,
            expect=STARTABLE,
            status=JobStatus.QUEUED,
            attempt=number,
            attempts=attempts,
            backend=None,
            prompt_id=None,
            progress=0.0,
            stage=None,
            step=None,
            steps=None,
            eta_s=None,
            error=None,
            retries=0,
            started_at=None,
            finished_at=None,
            message="Waiting for a GPU",
        )

    async def stop(self, job_id: str, caller: Principal | None = None) -> Job:
        """Cancel a pending, queued or running job (only its own ComfyUI prompt)."""
        job = await self.get(job_id, caller)
        if job.status.finished:
            return job
        clock = time.monotonic()
        now = utcnow()
        attempts = job.attempts_with_last(status=JobStatus.CANCELLED, finished_at=now, error=None)
        stopped = await self.writer.update(
            job_id,
            expect=(JobStatus.PENDING, *ACTIVE),
            status=JobStatus.CANCELLED,
            finished_at=now,
            attempts=attempts,
            eta_s=None,
            message="Stopped by user",
        )
        if stopped is None:
            return await self.get(job_id)
        written = time.monotonic()
        await self.dispatcher.cancel(job_id)
        followed = time.monotonic()
        # `stopped` is the row as the update left it: it names the prompt even when the
        # dispatcher submitted it after `job` was read (the tracker records the prompt id
        # before it posts, and posts only while the job is still active).
        await self._withdraw(stopped)
        done = time.monotonic()
        if done - clock > SLOW_STOP_S:  # an operator (or a test) should see where it waited
            log.warning(
                "job %s: stopping took %.1f s (writing %.1f s, letting go %.1f s, "
                "withdrawing from ComfyUI %.1f s)",
                job_id,
                done - clock,
                written - clock,
                followed - written,
                done - followed,
            )
        return stopped

    async def _withdraw(self, job: Job) -> None:
        backend = self.dispatcher.pool.get(job.backend)
        if backend is None or job.prompt_id is None:
            return
        try:
            await backend.client.delete_queued([job.prompt_id])
            await backend.client.interrupt(job.prompt_id)
        except ComfyError as exc:
            log.warning("job %s: could not withdraw prompt %s: %s", job.id, job.prompt_id, exc)

    async def delete(self, job_id: str, caller: Principal | None = None) -> Job:
        """Stop the job if it is active, then remove its files and its record."""
        job = await self.stop(job_id, caller)
        await self.outputs.delete([o.filename for o in job.outputs])
        await self.inputs.discard((job.inputs or {}).values())
        await self.store.delete(job_id)
        await self.writer.deleted(job)
        return job

    async def video_file(self, job: Job) -> StoredFile:
        """The finished job's video; Conflict while it is not ready."""
        if job.status is not JobStatus.COMPLETED:
            raise Conflict(
                f"job {job.id} is {job.status.value}; the video is not ready",
                status=job.status.value,
            )
        return await self.outputs.open_output(job.video, f"job {job.id}")

    async def wait(self, job_id: str, predicate: Callable[[Job], bool], timeout_s: float) -> Job:
        return await self.bus.wait_for(job_id, predicate, lambda: self.store.get(job_id), timeout_s)
