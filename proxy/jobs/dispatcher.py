"""Feeds the backends: keeps up to `backend_queue_depth` prompts in each ComfyUI (one running,
the next already waiting) so a GPU never idles waiting for the proxy; re-attaches active jobs
after a restart; retries a job a crashed backend lost once on another backend.

Every job ends, whatever fails:

- the dispatch loop is supervised: any exception in it is logged with its traceback, backed
  off (bounded exponential) and retried; only cancellation (`close`) ends it;
- recording a job's outcome is retried with the same backoff; a handler that keeps failing
  falls back to failing the job, retried until the database takes it, so a failing write
  never leaves a job active with nobody following it;
- a periodic sweep re-attaches or requeues any active job that nothing in this process
  follows, and hands out jobs waiting in the proxy's own queue;
- a job whose backend cannot take it (no answer to the submit, a dropped websocket) waits at
  most `backend_down_timeout_s`, counted from the first failure across re-attaches and
  releases; with no backend reachable at all for `no_backend_timeout_s`, queued jobs fail and
  new ones are refused (`NoBackend`) until one is back.

With replicas (`proxy.replicas`) each process feeds and follows only the backends it holds the
lease of (`Backend.mine`); queued jobs are claimed with SKIP LOCKED, so two replicas never take
the same one; a backend gained is swept at once (`adopt`: its jobs are re-attached from
ComfyUI's queue and history), one lost is let go without ending its jobs (`drop`), and a job
another replica stops or deletes is followed no more (`on_remote`).
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Awaitable, Callable
from contextlib import suppress
from datetime import datetime
from functools import partial
from pathlib import Path

from sqlalchemy.exc import SQLAlchemyError

from proxy.comfy import SocketState
from proxy.errors import ComfyError, ComfyUnavailable, NoBackend, NotFound, storage_full
from proxy.jobs.backends import Backend, BackendPool
from proxy.jobs.models import ACTIVE, Job, JobStatus
from proxy.jobs.store import JobStore, utcnow
from proxy.jobs.timings import TimingStore
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
# Backoff after a failure of the loop or of recording an outcome: quick for a blip, at most
# every 30 s for a database that stays unavailable (a full disk waiting for an operator).
RETRY_MIN_S = 0.5
RETRY_MAX_S = 30.0
# A handler (requeue, lost, fail) that fails this many times in a row gives way to plainly
# failing the job: retrying the same defect forever would leave the job in limbo.
HANDLER_ATTEMPTS = 3

INTERNAL_ERROR = (
    "Internal error in the proxy while following this job (the details are in the proxy's log)"
)
STORAGE_FULL = (
    "The proxy's storage is full: free space in its data folder (DATA_DIR, OUTPUT_DIR), "
    "then start the job again"
)


def choose_backend(free: list[Backend], job: Job) -> Backend:
    """The least busy backend; among equals, one that last ran this workflow (its models are
    already loaded on that GPU), then the lowest index."""
    least = min(len(b.inflight) for b in free)
    tied = [b for b in free if len(b.inflight) == least]
    warm = [b for b in tied if b.last_workflow == job.workflow]
    return min(warm or tied, key=lambda b: b.index)


def chosen_name(free: list[Backend], job: Job) -> str:
    return choose_backend(free, job).name


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
        timings: TimingStore | None = None,
    ) -> None:
        self.settings = settings
        self.timings = timings
        self.store = store
        self.writer = writer
        self.pool = pool
        self.registry = registry
        self.outputs = outputs
        self.uploads_dir: Path = settings.uploads_path
        # Timings, as attributes so tests can shorten them.
        self.cooldown_s = BACKEND_COOLDOWN_S
        self.retry_min_s = RETRY_MIN_S
        self.retry_max_s = RETRY_MAX_S
        # Told of each database error the dispatcher meets (the metrics count them).
        self.on_database_error: Callable[[], None] = lambda: None
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._runners: dict[str, tuple[asyncio.Task[None], Backend]] = {}
        self._trackers: dict[str, JobTracker] = {}
        # Runners of jobs another replica stopped, withdrawing their prompt (`on_remote`).
        self._leaving: set[asyncio.Task[None]] = set()
        # With replicas: whether a backend this process does not know (not in its
        # COMFYUI_URL) is driven by another replica; its jobs are then left alone.
        self.held_elsewhere: Callable[[str], bool] = lambda _name: False
        # Per job: when (loop time) its backend first failed to take or follow it, carried
        # across re-attaches and releases until ComfyUI answers for it again.
        self._down_since: dict[str, float] = {}
        self._closing = False
        # When no backend has been reachable since (loop time, and wall time for messages).
        self._no_backend_at: float | None = None
        self.no_backend_since: datetime | None = None
        self._next_sweep = 0.0
        # How often in a row the loop has failed, and the last failure (for health answers).
        self.loop_failures = 0
        self.last_loop_error: str | None = None

    def wake(self) -> None:
        self._wake.set()

    @property
    def running(self) -> bool:
        """Whether the dispatch loop is alive (started and not stopped)."""
        return self._task is not None and not self._task.done()

    @property
    def refusing(self) -> bool:
        """Whether no backend has been reachable for `no_backend_timeout_s`: queued jobs are
        failed and new ones refused until one is back."""
        limit = self.settings.no_backend_timeout_s
        if limit <= 0 or self._no_backend_at is None:
            return False
        return asyncio.get_running_loop().time() - self._no_backend_at >= limit

    def check_accepting(self) -> None:
        """NoBackend while `refusing`."""
        if not self.refusing or self.no_backend_since is None:
            return
        retry = max(1, math.ceil(self.settings.ws_reconnect_max_s))
        raise NoBackend(
            f"No ComfyUI backend has been reachable since {self._since_text()}: new jobs are "
            "refused until one is back. Try again later.",
            retry_after_s=retry,
        )

    def _since_text(self) -> str:
        since = self.no_backend_since.isoformat(timespec="seconds") if self.no_backend_since else ""
        return f"{since} ({', '.join(b.name for b in self.pool.backends)})"

    def _note_backends(self) -> None:
        """Track since when no backend's websocket has been connected."""
        if self.pool.connected():
            if self.refusing:
                log.info("a ComfyUI backend is reachable again; taking jobs")
            self._no_backend_at = None
            self.no_backend_since = None
        elif self._no_backend_at is None:
            self._no_backend_at = asyncio.get_running_loop().time()
            self.no_backend_since = utcnow()

    async def on_backend_state(self, backend: Backend, state: SocketState) -> None:
        if state is SocketState.CONNECTED:
            log.info("backend %s is up", backend.name)
            backend.last_error = None
        elif state is SocketState.DISCONNECTED:
            backend.last_error = backend.socket.last_error
        self._note_backends()
        self.wake()

    async def start(self) -> None:
        self._note_backends()
        try:
            await self.reconcile()
        except Exception:
            # The sweep repeats it within seconds; the loop must start regardless.
            log.exception("dispatcher: could not re-attach the active jobs at start")
        self._next_sweep = asyncio.get_running_loop().time() + self.settings.job_sweep_interval_s
        self._task = asyncio.create_task(self._loop(), name="dispatcher")
        self.wake()

    async def close(self) -> None:
        """Stop feeding and stop following; jobs stay as they are and are re-attached later."""
        self._closing = True
        if self._task is not None:
            self._task.cancel()
            with suppress(asyncio.CancelledError):
                await self._task
        runners = [task for task, _ in self._runners.values()] + list(self._leaving)
        for task in runners:
            task.cancel()
        for task in runners:
            with suppress(asyncio.CancelledError):
                await task
        self._runners.clear()
        await self.writer.flush()

    async def reconcile(self) -> None:
        """After a restart: follow again every job that was already in a ComfyUI (the sweep,
        run at once: at start nothing is followed yet)."""
        await self._sweep()

    # -- the loop --------------------------------------------------------------------------

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            # Woken by new jobs and backend changes; also every sweep interval, and when the
            # no-backend limit falls due.
            # asyncio.timeout, not wait_for: on 3.11 a cancellation that lands as wait_for
            # times out comes back as TimeoutError, and close() would wait forever.
            with suppress(TimeoutError):
                async with asyncio.timeout(self._idle_timeout()):
                    await self._wake.wait()
            self._wake.clear()
            try:
                self._note_backends()
                if self.refusing:
                    await self._fail_queued()
                await self._fill()
                if loop.time() >= self._next_sweep:
                    await self._sweep()
                    self._next_sweep = loop.time() + self.settings.job_sweep_interval_s
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                # Whatever failed (the database, a defect), the loop carries on after a pause
                # that grows with repeated failures; jobs meanwhile wait, they are not lost.
                delay = min(self.retry_max_s, self.retry_min_s * 2 ** min(self.loop_failures, 16))
                self.loop_failures += 1
                self.last_loop_error = f"{type(exc).__name__}: {exc}"
                if isinstance(exc, SQLAlchemyError):
                    self.on_database_error()
                if isinstance(exc, ComfyError):
                    log.warning("dispatcher: %s; retrying in %.1f s", exc, delay)
                else:
                    log.exception("dispatcher: the dispatch loop failed; retrying in %.1f s", delay)
                await asyncio.sleep(delay)  # the backoff itself, not a synchronisation
                self.wake()
            else:
                self.loop_failures = 0
                self.last_loop_error = None

    def _idle_timeout(self) -> float:
        loop = asyncio.get_running_loop()
        timeout = max(0.0, self._next_sweep - loop.time())
        limit = self.settings.no_backend_timeout_s
        if limit > 0 and self._no_backend_at is not None:
            timeout = min(timeout, max(0.0, self._no_backend_at + limit - loop.time()))
        return max(timeout, 0.01)

    async def _fill(self) -> None:
        depth = max(1, self.settings.backend_queue_depth)
        while True:
            free = [b for b in self.pool.up() if len(b.inflight) < depth]
            if not free:
                return
            claimed = await self.store.claim_next(partial(chosen_name, free))
            backend = self.pool.get(claimed.backend) if claimed is not None else None
            if claimed is None or backend is None:
                return
            self._spawn(backend, claimed)

    async def _fail_queued(self) -> None:
        """No backend for `no_backend_timeout_s`: fail every job waiting in our own queue."""
        for job in await self.store.list(statuses=(JobStatus.QUEUED,), oldest_first=True):
            if not self.refusing:
                return  # a backend came back while the queue was read: the rest may run
            if job.backend is not None or job.id in self._runners:
                continue  # in a ComfyUI: backend_down_timeout_s decides its fate
            reason = (
                f"No ComfyUI was reachable since {self._since_text()}, so the job was not run "
                f"(NO_BACKEND_TIMEOUT_S={self.settings.no_backend_timeout_s:g}). Start ComfyUI "
                "or check COMFYUI_URL, then start the job again."
            )
            await self._fail(job, reason, expect_queued=True)

    async def _sweep(self) -> None:
        """Re-attach or requeue every active job with a backend that no runner follows."""
        if self._closing:
            return
        active = await self.store.list(statuses=ACTIVE, oldest_first=True)
        ids = {job.id for job in active}
        for job_id in [k for k in self._down_since if k not in ids]:
            del self._down_since[job_id]  # ended or removed elsewhere (a stop, a delete)
        for job in active:
            # Checked before the conditional write below: a runner that is gone has made all
            # its writes, so that write sees the job as the runner left it.
            if job.backend is None or job.id in self._runners or self._closing:
                continue
            backend = self.pool.get(job.backend)
            if backend is not None and not backend.mine:
                continue  # another replica drives its backend (and follows it)
            if backend is None and self.held_elsewhere(job.backend):
                continue  # a backend only another replica is configured with
            if backend is None or job.prompt_id is None:
                # Its backend left the configuration, or it was claimed and never submitted.
                requeued = await self.writer.update(
                    job.id,
                    expect=ACTIVE,
                    expect_prompt_id=job.prompt_id,
                    backend=None,
                    prompt_id=None,
                    status=JobStatus.QUEUED,
                )
                if requeued is not None:
                    log.info("job %s requeued: nothing followed it", job.id)
                    self.wake()
                continue
            current = await self.store.update(job.id, expect=ACTIVE, expect_prompt_id=job.prompt_id)
            if current is None or current.backend != backend.name or job.id in self._runners:
                continue
            log.info("job %s re-attached to %s prompt=%s", job.id, backend.name, job.prompt_id)
            self._spawn(backend, current)

    # -- following one job -----------------------------------------------------------------

    def _spawn(self, backend: Backend, job: Job) -> None:
        if not backend.mine:
            # Its lease was lost while the job was being claimed: the replica that drives
            # the backend now requeues it (claimed, never submitted) or re-attaches it.
            return
        backend.inflight.add(job.id)
        backend.last_workflow = job.workflow
        task = asyncio.create_task(self._run(backend, job), name=f"job:{job.id}")
        self._runners[job.id] = (task, backend)

    async def _run(self, backend: Backend, job: Job) -> None:
        """Follow one job to its end, and record how it ended."""
        tracker = self._trackers[job.id] = JobTracker(
            writer=self.writer,
            registry=self.registry,
            outputs=self.outputs,
            uploads_dir=self.uploads_dir,
            backend=backend,
            job=job,
            stall_timeout_s=self.settings.job_stall_timeout_s,
            timings=self.timings,
        )
        try:
            try:
                await tracker.run()
            finally:
                if tracker.heard_from_backend:
                    # ComfyUI answered for this job: a later failure waits from zero again.
                    self._down_since.pop(job.id, None)
        except Released as exc:
            backend.last_error = str(exc)
            backend.cooldown_until = asyncio.get_running_loop().time() + self.cooldown_s
            asyncio.get_running_loop().call_later(self.cooldown_s, self.wake)
            released = str(exc)
            await self._settle(tracker, lambda: self._released(backend, tracker.job, released))
        except Lost as exc:
            lost = str(exc)
            await self._settle(
                tracker, lambda: self._lost(backend, tracker.job, lost, same_backend=True)
            )
        except ComfyUnavailable as exc:
            backend.last_error = exc.message
            if self._closing:
                return
            away = exc
            await self._settle(tracker, lambda: self._await_backend(backend, tracker, away))
        except NotFound as exc:
            # Its workflow was removed from WORKFLOWS_DIR (or renamed) while the job waited.
            await self._withdraw_quietly(tracker)
            reason = f"its workflow is no longer served: {exc.message}"
            await self._settle(tracker, lambda: self._fail(tracker.job, reason))
        except ComfyError as exc:
            # The backend answered, but not as ComfyUI should (an HTTP 500, a refused upload,
            # a body we cannot read): asking again would loop. Fail the job with the answer.
            backend.last_error = exc.message
            await tracker.withdraw()
            reason = f"ComfyUI at {backend.name} answered unexpectedly: {exc.message}"
            await self._settle(tracker, lambda: self._fail(tracker.job, reason))
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            # A defect or a broken data dir must not leave the job active with nobody
            # following it: say so on the job (without naming code), keep the traceback in
            # the log.
            log.exception("job %s: internal error while following it", job.id)
            await self._withdraw_quietly(tracker)
            reason = STORAGE_FULL if storage_full(exc) else INTERNAL_ERROR
            await self._settle(tracker, lambda: self._fail(tracker.job, reason))
        finally:
            if self._trackers.get(job.id) is tracker:
                del self._trackers[job.id]
            if self._runners.get(job.id, (None, None))[0] is asyncio.current_task():
                self._runners.pop(job.id, None)
                backend.inflight.discard(job.id)
                if backend.current_job == job.id:
                    backend.current_job = None
                self.wake()

    async def _settle(self, tracker: JobTracker, handler: Callable[[], Awaitable[None]]) -> None:
        """Run a job's end handler until it has recorded the outcome. A failure (the database
        refusing the write, a defect) is retried with backoff; after HANDLER_ATTEMPTS the job
        is failed instead, and that is retried until it lands or the job is no longer active.
        Only cancellation (the proxy stopping) ends this early: the job is then re-attached at
        the next start."""
        job_id = tracker.job.id
        attempts = 0
        delay = self.retry_min_s
        fallback = False
        reason = INTERNAL_ERROR
        while True:
            try:
                if not fallback:
                    await handler()
                    return
                current = await self.store.get(job_id)
                if current is not None and current.status in ACTIVE:
                    await self._fail(current, reason)
                return
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                reason = STORAGE_FULL if storage_full(exc) else INTERNAL_ERROR
                if isinstance(exc, SQLAlchemyError):
                    self.on_database_error()
                attempts += 1
                log.exception(
                    "job %s: could not record how it ended (attempt %d); retrying in %.1f s",
                    job_id,
                    attempts,
                    delay,
                )
            await asyncio.sleep(delay)  # backoff before the next attempt
            delay = min(delay * 2, self.retry_max_s)
            if attempts >= HANDLER_ATTEMPTS and not fallback:
                fallback = True
                await self._withdraw_quietly(tracker)

    async def _withdraw_quietly(self, tracker: JobTracker) -> None:
        try:
            await tracker.withdraw()
        except Exception:  # best effort: the job is failed either way
            log.exception("job %s: could not withdraw its prompt", tracker.job.id)

    def _down_for(self, job_id: str) -> float:
        """Seconds since the job's backend first failed it (starting the count now)."""
        now = asyncio.get_running_loop().time()
        return now - self._down_since.setdefault(job_id, now)

    async def _released(self, backend: Backend, job: Job, reason: str) -> None:
        """The backend did not take the job (the submit or an upload timed out; the prompt,
        if any, was withdrawn). Back to our queue, within backend_down_timeout_s counted from
        the first failure, so a backend that keeps timing out cannot bounce it forever."""
        limit = self.settings.backend_down_timeout_s
        if self._down_for(job.id) >= limit:
            await self._lost(
                backend,
                job,
                f"ComfyUI at {backend.name} has not been usable for {limit:g} s ({reason})",
                same_backend=False,
            )
            return
        await self.writer.update(
            job.id,
            expect=ACTIVE,
            backend=None,
            prompt_id=None,
            status=JobStatus.QUEUED,
            message=f"Waiting for a ComfyUI backend: {reason}",
        )

    async def _await_backend(
        self, backend: Backend, tracker: JobTracker, exc: ComfyUnavailable
    ) -> None:
        """The backend went away mid-job, or stopped answering. Wait for it, within
        backend_down_timeout_s counted from the first failure (however many re-attaches fail
        meanwhile); once it is back, follow again (the resync tells whether it still has the
        job); else treat the job as lost."""
        job = tracker.job
        try:
            await self.writer.update(
                job.id, expect=ACTIVE, message=f"{exc.message}; waiting for it"
            )
        except Exception:  # only a message: waiting matters more than saying so
            log.exception("job %s: could not record that its backend is away", job.id)
        limit = self.settings.backend_down_timeout_s
        remaining = limit - self._down_for(job.id)
        if backend.socket.connected and remaining > 0:
            await asyncio.sleep(min(RETRY_PAUSE_S, remaining))  # steady retries, not a spin
            remaining = limit - self._down_for(job.id)
        if remaining > 0 and await backend.socket.wait_connected(remaining):
            current = await self.store.get(job.id)
            if current is not None and current.status in ACTIVE and not self._closing:
                self._runners.pop(job.id, None)
                backend.inflight.discard(job.id)
                self._spawn(backend, current)
            return
        if self._closing:
            return  # stopping, not given up on: the next start re-attaches it
        current = await self.store.get(job.id)
        if current is not None and current.status in ACTIVE:
            await tracker.withdraw()  # should it come back, it must not run the job too
            await self._lost(
                backend,
                current,
                f"ComfyUI at {backend.name} has not been usable for {limit:g} s ({exc.message})",
                same_backend=False,
            )

    async def _lost(
        self, backend: Backend, job: Job, reason: str, *, same_backend: bool = False
    ) -> None:
        """Retry once, on another backend that is up; on any backend, this one included,
        when `same_backend` (nothing of the job ran: ComfyUI only held it in its queue).
        Otherwise fail with the reason."""
        others = [b for b in self.pool.connected() if b is not backend]
        same = same_backend and job.status is JobStatus.QUEUED
        if job.retries < 1 and (others or same):
            log.warning("job %s lost on %s; retrying", job.id, backend.name)
            requeued = await self.writer.update(
                job.id,
                expect=ACTIVE,
                status=JobStatus.QUEUED,
                backend=None,
                prompt_id=None,
                retries=job.retries + 1,
                progress=0.0,
                stage=None,
                step=None,
                message=f"{reason}; retrying" + ("" if same else " on another backend"),
            )
            if requeued is not None:
                self._down_since.pop(job.id, None)  # a fresh chance, a fresh wait
            return
        await self._fail(job, reason)

    async def _fail(self, job: Job, reason: str, *, expect_queued: bool = False) -> None:
        now = utcnow()
        failed = await self.writer.update(
            job.id,
            expect=(JobStatus.QUEUED,) if expect_queued else ACTIVE,
            status=JobStatus.FAILED,
            error=reason,
            message=reason,
            finished_at=now,
            eta_s=None,
            attempts=job.attempts_with_last(status=JobStatus.FAILED, finished_at=now, error=reason),
        )
        if failed is not None:
            self._down_since.pop(job.id, None)

    # -- replicas (`proxy.replicas`) --------------------------------------------------------

    def adopt(self, backend: Backend) -> None:
        """This replica now drives `backend`: follow its jobs again at once (the sweep
        re-attaches them from ComfyUI's queue and history) and feed it."""
        self._next_sweep = 0.0
        self.wake()

    async def drop(self, backend: Backend) -> None:
        """This replica no longer drives `backend`: stop following its jobs without ending
        them (the replica that takes it over re-attaches them)."""
        ids = {job_id for job_id, (_, b) in self._runners.items() if b is backend}
        # The progress shown is written first: the next owner resumes from it.
        await self.writer.flush(only=ids)
        followed = [entry for job_id in ids if (entry := self._unfollow(job_id))]
        for task, _ in followed:
            with suppress(asyncio.CancelledError):
                await task
        # A submit under way lands (or fails) before the next owner looks for its prompt.
        for _, tracker in followed:
            if tracker is not None:
                await tracker.posted(self.settings.comfy_http_timeout_s)

    def on_remote(self, kind: str, job: Job) -> None:
        """Another replica changed a job: a new or requeued one may be ours to run; one it
        stopped or deleted that we follow is followed no more."""
        if job.status is JobStatus.QUEUED and job.backend is None:
            self.wake()
        if job.id not in self._runners or (kind != "deleted" and job.status in ACTIVE):
            return
        entry = self._unfollow(job.id)
        if entry is not None and entry[1] is not None:
            leaving = asyncio.create_task(self._let_go(*entry), name=f"stop:{job.id}")
            self._leaving.add(leaving)
            leaving.add_done_callback(self._leaving.discard)

    async def _let_go(self, runner: asyncio.Task[None], tracker: JobTracker | None) -> None:
        """A job stopped elsewhere: once its runner is gone and a submit under way has
        landed, take its prompt out of ComfyUI (the stopping replica may have looked before
        the prompt arrived)."""
        with suppress(asyncio.CancelledError):
            await runner
        if tracker is not None:
            await tracker.posted(self.settings.comfy_http_timeout_s)
            await self._withdraw_quietly(tracker)

    def _unfollow(self, job_id: str) -> tuple[asyncio.Task[None], JobTracker | None] | None:
        """Stop following a job here without ending it (its runner is cancelled, its backend
        freed); the runner, to await, and the tracker it had. None: nothing followed it."""
        self._down_since.pop(job_id, None)
        entry = self._runners.pop(job_id, None)
        if entry is None:
            return None
        task, backend = entry
        self.writer.running.discard(job_id)  # no progress of it is shown any more
        task.cancel()
        backend.inflight.discard(job_id)
        if backend.current_job == job_id:
            backend.current_job = None
        self.wake()
        return task, self._trackers.get(job_id)

    async def cancel(self, job_id: str) -> None:
        """Stop following a job (its ComfyUI prompt is withdrawn by the caller)."""
        entry = self._unfollow(job_id)
        if entry is not None:
            with suppress(asyncio.CancelledError):
                await entry[0]
