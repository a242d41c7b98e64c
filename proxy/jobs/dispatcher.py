"""Feeds the backends: keeps up to `backend_queue_depth` prompts in each ComfyUI (one running,
the next already waiting) so a GPU never idles waiting for the proxy; re-attaches active jobs
after a restart; retries a job a crashed backend lost once on another backend."""

from __future__ import annotations

import asyncio
import logging
from contextlib import suppress
from pathlib import Path

from proxy.comfy import SocketState
from proxy.errors import ComfyError, ComfyUnavailable
from proxy.jobs.backends import Backend, BackendPool
from proxy.jobs.models import ACTIVE, Job, JobStatus
from proxy.jobs.store import JobStore, utcnow
from proxy.jobs.tracker import JobTracker, Lost, Released
from proxy.jobs.writer import JobWriter
from proxy.media.storage import OutputStore
from proxy.settings import Settings
from proxy.workflows import WorkflowRegistry

log = logging.getLogger("proxy.dispatcher")

BACKEND_COOLDOWN_S = 2.0
# Pause before following a job again when its backend failed a request but its websocket is
# still up (an HTTP timeout): retry steadily, not in a tight loop.
RETRY_PAUSE_S = 1.0


def choose_backend(free: list[Backend], job: Job) -> Backend:
    """The least busy backend; among equals, one that last ran this workflow (its models are
    already loaded on that GPU), then the lowest index."""
    least = min(len(b.inflight) for b in free)
    tied = [b for b in free if len(b.inflight) == least]
    warm = [b for b in tied if b.last_workflow == job.workflow]
    return min(warm or tied, key=lambda b: b.index)


class Dispatcher:
    def __init__(
        self,
        *,
        settings: Settings,
        store: JobStore,
        writer: JobWriter,
        pool: BackendPool,
        registry: WorkflowRegistry,
        outputs: OutputStore,
    ) -> None:
        self.settings = settings
        self.store = store
        self.writer = writer
        self.pool = pool
        self.registry = registry
        self.outputs = outputs
        self.uploads_dir: Path = settings.uploads_path
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._runners: dict[str, tuple[asyncio.Task[None], Backend]] = {}
        self._closing = False

    def wake(self) -> None:
        self._wake.set()

    @property
    def running(self) -> bool:
        """Whether the dispatch loop is alive (not stopped, not ended by a defect)."""
        return self._task is not None and not self._task.done()

    async def on_backend_state(self, backend: Backend, state: SocketState) -> None:
        if state is SocketState.CONNECTED:
            log.info("backend %s is up", backend.name)
            backend.last_error = None
            self.wake()
        elif state is SocketState.DISCONNECTED:
            backend.last_error = backend.socket.last_error

    async def start(self) -> None:
        await self.reconcile()
        self._task = asyncio.create_task(self._loop(), name="dispatcher")
        self.wake()

    async def close(self) -> None:
        """Stop feeding and stop following; jobs stay as they are and are re-attached later."""
        self._closing = True
        if self._task is not None:
            self._task.cancel()
            with suppress(asyncio.CancelledError):
                await self._task
        runners = [task for task, _ in self._runners.values()]
        for task in runners:
            task.cancel()
        for task in runners:
            with suppress(asyncio.CancelledError):
                await task
        self._runners.clear()

    async def reconcile(self) -> None:
        """After a restart: follow again every job that was already in a ComfyUI."""
        for job in await self.store.list(statuses=ACTIVE, oldest_first=True):
            if job.backend is None:
                continue  # still in our own queue: the loop will hand it out
            backend = self.pool.get(job.backend)
            if backend is None or job.prompt_id is None:
                # Its backend left the configuration, or it was never submitted.
                await self.writer.update(
                    job.id, expect=ACTIVE, backend=None, prompt_id=None, status=JobStatus.QUEUED
                )
                continue
            log.info("job %s re-attached to %s prompt=%s", job.id, backend.name, job.prompt_id)
            self._spawn(backend, job)

    async def _loop(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            try:
                await self._fill()
            except ComfyError as exc:  # a backend failing mid-fill must not stop the loop
                log.warning("dispatcher: %s", exc)

    async def _fill(self) -> None:
        depth = max(1, self.settings.backend_queue_depth)
        while True:
            free = [b for b in self.pool.up() if len(b.inflight) < depth]
            if not free:
                return
            job = await self.store.next_queued()
            if job is None:
                return
            backend = choose_backend(free, job)
            claimed = await self.store.claim(job.id, backend.name)
            if claimed is not None:
                self._spawn(backend, claimed)

    def _spawn(self, backend: Backend, job: Job, *, down_since: float | None = None) -> None:
        backend.inflight.add(job.id)
        backend.last_workflow = job.workflow
        task = asyncio.create_task(self._run(backend, job, down_since), name=f"job:{job.id}")
        self._runners[job.id] = (task, backend)

    async def _run(self, backend: Backend, job: Job, down_since: float | None = None) -> None:
        """Follow one job to its end. `down_since`: when its backend became unusable, carried
        over re-attaches until the tracker hears from ComfyUI again."""
        tracker = JobTracker(
            writer=self.writer,
            registry=self.registry,
            outputs=self.outputs,
            uploads_dir=self.uploads_dir,
            backend=backend,
            job=job,
            stall_timeout_s=self.settings.job_stall_timeout_s,
        )
        try:
            await tracker.run()
        except Released as exc:
            backend.last_error = str(exc)
            backend.cooldown_until = asyncio.get_running_loop().time() + BACKEND_COOLDOWN_S
            asyncio.get_running_loop().call_later(BACKEND_COOLDOWN_S, self.wake)
            await self.writer.update(
                job.id,
                expect=ACTIVE,
                backend=None,
                prompt_id=None,
                status=JobStatus.QUEUED,
                message=f"Waiting for a ComfyUI backend: {exc}",
            )
        except Lost as exc:
            await self._lost(backend, tracker.job, str(exc))
        except ComfyUnavailable as exc:
            # The backend went away mid-job, or stopped answering. Wait for it, within
            # backend_down_timeout_s counted from the first failure (however many re-attaches
            # fail meanwhile); once it is back, follow again (the resync tells whether it
            # still has the job); else treat the job as lost.
            backend.last_error = exc.message
            if self._closing:
                return
            await self.writer.update(
                job.id, expect=ACTIVE, message=f"{exc.message}; waiting for it"
            )
            loop = asyncio.get_running_loop()
            if down_since is None or tracker.heard_from_backend:
                down_since = loop.time()
            limit = self.settings.backend_down_timeout_s
            remaining = limit - (loop.time() - down_since)
            if backend.socket.connected and remaining > 0:
                await asyncio.sleep(min(RETRY_PAUSE_S, remaining))
                remaining = limit - (loop.time() - down_since)
            if remaining > 0 and await backend.socket.wait_connected(remaining):
                current = await self.store.get(job.id)
                if current is not None and current.status in ACTIVE and not self._closing:
                    self._runners.pop(job.id, None)
                    backend.inflight.discard(job.id)
                    self._spawn(backend, current, down_since=down_since)
                return
            current = await self.store.get(job.id)
            if current is not None and current.status in ACTIVE:
                await tracker.withdraw()  # should it come back, it must not run the job too
                await self._lost(
                    backend,
                    current,
                    f"ComfyUI at {backend.name} has not been usable for {limit:g} s "
                    f"({exc.message})",
                )
        except ComfyError as exc:
            # The backend answered, but not as ComfyUI should (an HTTP 500, a refused upload,
            # a body we cannot read): asking again would loop. Fail the job with the answer.
            backend.last_error = exc.message
            await tracker.withdraw()
            await self._fail(
                tracker.job, f"ComfyUI at {backend.name} answered unexpectedly: {exc.message}"
            )
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            # A defect or a broken data dir must not leave the job active with nobody
            # following it: say so on the job, and keep the traceback in the log.
            log.exception("job %s: internal error while following it", job.id)
            await tracker.withdraw()
            await self._fail(
                tracker.job, f"Internal error in the proxy: {type(exc).__name__}: {exc}"
            )
        finally:
            if self._runners.get(job.id, (None, None))[0] is asyncio.current_task():
                self._runners.pop(job.id, None)
                backend.inflight.discard(job.id)
                if backend.current_job == job.id:
                    backend.current_job = None
                self.wake()

    async def _lost(self, backend: Backend, job: Job, reason: str) -> None:
        """Retry once on another backend that is up; otherwise fail with the reason."""
        others = [b for b in self.pool.up() if b is not backend]
        if job.retries < 1 and others:
            log.warning("job %s lost on %s; retrying elsewhere", job.id, backend.name)
            await self.writer.update(
                job.id,
                expect=ACTIVE,
                status=JobStatus.QUEUED,
                backend=None,
                prompt_id=None,
                retries=job.retries + 1,
                progress=0.0,
                stage=None,
                step=None,
                message=f"{reason}; retrying on another backend",
            )
            return
        await self._fail(job, reason)

    async def _fail(self, job: Job, reason: str) -> None:
        now = utcnow()
        await self.writer.update(
            job.id,
            expect=ACTIVE,
            status=JobStatus.FAILED,
            error=reason,
            message=reason,
            finished_at=now,
            eta_s=None,
            attempts=job.attempts_with_last(status=JobStatus.FAILED, finished_at=now, error=reason),
        )

    async def cancel(self, job_id: str) -> None:
        """Stop following a job (its ComfyUI prompt is withdrawn by the caller)."""
        entry = self._runners.pop(job_id, None)
        if entry is None:
            return
        task, backend = entry
        task.cancel()
        with suppress(asyncio.CancelledError):
            await task
        backend.inflight.discard(job_id)
        if backend.current_job == job_id:
            backend.current_job = None
        self.wake()
