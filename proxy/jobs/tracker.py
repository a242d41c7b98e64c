"""Follows one job on one backend: submit (or re-attach), turn websocket events into progress,
then store the outputs named in /history.

The same path serves a fresh submit, a re-attach after a proxy restart and a resync after a
websocket drop: whenever events may have been missed, ask /queue then /history where the
prompt is (in that order: ComfyUI writes history before it drops the prompt from the queue).
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy.exc import SQLAlchemyError

from proxy.comfy import ComfyEvent, HistoryEntry, PromptAccepted
from proxy.comfy.models import DISCONNECTED, RECONNECTED
from proxy.errors import ComfyError, ComfyUnavailable, NotFound, PromptRejected
from proxy.jobs.backends import Backend
from proxy.jobs.models import ACTIVE, Job, JobStatus
from proxy.jobs.progress import ProgressTracker
from proxy.jobs.store import utcnow
from proxy.jobs.timings import SizeClass, TimingStore
from proxy.jobs.writer import JobWriter
from proxy.media.inputs import InputFiles
from proxy.media.storage import OutputStore, StoreError
from proxy.workflows import WorkflowRegistry

log = logging.getLogger("proxy.tracker")

# Progress is published to live views at every change, and as time passes in a node that
# reports nothing (every TICK_S); the database gets it at most every PROGRESS_PERSIST_S
# (status changes are written at once).
TICK_S = 0.25
PROGRESS_PERSIST_S = 2.0
# A learned run ticks about this many times over its expected length, within these bounds
# (a 1 s job needs finer steps than a 16 s one to look smooth).
# Each tick is an event to every live view (a socket write per client: most of the proxy's
# CPU per job, see bench.cost), so a tick is shown only when the bar has moved TICK_POINTS.
TICKS_PER_RUN = 40
TICK_RANGE_S = (0.1, 0.5)
TICK_POINTS = 0.5


class Lost(Exception):
    """ComfyUI no longer knows the prompt (restarted, or its queue was cleared)."""


class Released(Exception):
    """The job could not be submitted to this backend and goes back to the proxy's queue."""


@dataclass
class Outcome:
    status: JobStatus
    fields: dict[str, Any]


class JobTracker:
    def __init__(
        self,
        *,
        writer: JobWriter,
        registry: WorkflowRegistry,
        outputs: OutputStore,
        uploads_dir: Path,
        backend: Backend,
        job: Job,
        idle_resync_s: float = 30.0,
        stall_timeout_s: float = 0.0,
        timings: TimingStore | None = None,
    ) -> None:
        self.timings = timings
        self.writer = writer
        self.registry = registry
        self.outputs = outputs
        # The job's input files: in `uploads_dir`, or in the output store when it keeps them
        # (a bucket: the replica that received a file need not be this one).
        self.inputs = InputFiles(uploads_dir, outputs)
        self.backend = backend
        self.job = job
        # Running with no event at all for this long: ComfyUI hangs; the job is interrupted
        # and failed (0 = wait forever). Waiting in ComfyUI's queue does not count.
        self.stall_timeout_s = stall_timeout_s
        self.idle_resync_s = (
            min(idle_resync_s, stall_timeout_s / 2) if stall_timeout_s > 0 else idle_resync_s
        )
        self._last_event = time.monotonic()
        self._last_resync = 0.0
        # Set once ComfyUI has answered a resync or sent an event for this prompt: the
        # dispatcher's wait for an unusable backend starts again from zero after that.
        self.heard_from_backend = False
        # The submit's POST while it is under way (see `_submit` and `posted`).
        self.posting: asyncio.Future[PromptAccepted] | None = None
        self.prompt_id = job.prompt_id
        self.graph: dict[str, Any] = {}
        self.progress: ProgressTracker | None = None
        self._last_persist = 0.0
        self._shown = 0.0  # the progress last shown (published or written)
        self._success = False
        self._size = SizeClass.of(job.params)

    # -- entry points ----------------------------------------------------------------------

    async def run(self) -> None:
        """Submit (when the job has no prompt yet) or re-attach, then follow to the end."""
        submit = self.prompt_id is None
        prompt_id = self.prompt_id = self.prompt_id or str(uuid.uuid4())
        try:
            self.graph = await self._build_graph(upload=submit)
        except _Done:  # failed before anything reached ComfyUI (an input could not be read)
            return
        # Re-attached (after a restart or a reconnect): carry on from the stored progress, so
        # it never goes backwards.
        self.progress = ProgressTracker(
            self.graph,
            expected=await self._expected(),
            percent=0.0 if submit else self.job.progress,
        )
        if not submit and self.job.status is JobStatus.RUNNING:
            self.progress.resumed(self.job.stage, self.job.step, self.job.steps)
        events = self.backend.socket.subscribe(prompt_id)
        try:
            if submit:
                await self._submit()
            else:
                await self._resync(events)
            await self._follow(events)
        except _Done:
            pass
        finally:
            self.backend.socket.unsubscribe(prompt_id, events)

    async def _expected(self) -> dict[str, float] | None:
        if self.timings is None:
            return None
        try:
            found = await self.timings.expected(self.backend.name, self.job.workflow, self._size)
        except SQLAlchemyError as exc:  # progress falls back to fixed weights; the job runs
            log.warning("job %s: learned timings not read: %s", self.job.id, exc)
            return None
        return found.seconds if found else None

    async def _learn(self) -> None:
        assert self.progress is not None
        measured = self.progress.measured()
        if self.timings is None or not measured:
            return
        try:
            await self.timings.record(self.backend.name, self.job.workflow, self._size, measured)
        except SQLAlchemyError as exc:  # the job is done; only the lesson is lost
            log.warning("job %s: timings not recorded: %s", self.job.id, exc)

    async def _build_graph(self, *, upload: bool) -> dict[str, Any]:
        workflow = self.registry.get(self.job.workflow)
        params = dict(self.job.params)
        for name, info in (self.job.inputs or {}).items():
            if upload:
                params[name] = await self._upload_input(name, info)
            else:
                params[name] = info.get("comfy_name") or info["upload_name"]
        return workflow.fill(params, filename_prefix=f"fastwan/{self.job.id}")

    async def _upload_input(self, name: str, info: dict[str, Any]) -> str:
        """Send one input file to ComfyUI; the name it chose. An input the store cannot give
        fails the job (nothing has reached ComfyUI yet; asking again would not help)."""
        try:
            async with self.inputs.local_file(info["stored"]) as path:
                return await self.backend.client.upload(path, info["upload_name"])
        except ComfyUnavailable as exc:
            raise Released(str(exc)) from exc
        except (StoreError, NotFound) as exc:
            text = f"The {name} input could not be read: {exc.message}"
            failed = Outcome(JobStatus.FAILED, {"error": text, "message": text})
            await self._finish(failed, check_prompt=False)
            raise _Done() from None

    async def _submit(self) -> None:
        assert self.prompt_id is not None
        # Record the prompt id before posting, and post only while the job is still active:
        # a stop that lands meanwhile then knows which prompt to withdraw from ComfyUI.
        job = await self.writer.update(
            self.job.id,
            expect=ACTIVE,
            prompt_id=self.prompt_id,
            backend=self.backend.name,
            attempts=self.job.attempts_with_last(
                backend=self.backend.name, prompt_id=self.prompt_id
            ),
        )
        if job is None:  # stopped before we posted: nothing reached ComfyUI
            raise _Done()
        self.job = job
        # The POST itself is not cancelled with the tracker (a replica letting the backend
        # go, a stop from another replica): cut off midway, it could still land after the
        # prompt was looked for or withdrawn. `posted` waits for it to end.
        self.posting = asyncio.ensure_future(
            self.backend.client.submit(
                self.graph, client_id=self.backend.socket.client_id, prompt_id=self.prompt_id
            )
        )
        # Its outcome is read here, or by `posted`, or (abandoned) by this callback.
        self.posting.add_done_callback(lambda done: done.cancelled() or done.exception())
        try:
            await asyncio.shield(self.posting)
        except ComfyUnavailable as exc:
            # A timeout may hide a prompt that did arrive: take it back so it cannot run twice.
            await self.withdraw()
            raise Released(str(exc)) from exc
        except PromptRejected as exc:
            failed = Outcome(JobStatus.FAILED, {"error": exc.message, "message": exc.message})
            await self._finish(failed, check_prompt=False)
            raise _Done() from None
        self.heard_from_backend = True  # ComfyUI took it: any earlier wait for it is over
        job = await self.writer.update(
            self.job.id,
            expect=ACTIVE,
            expect_prompt_id=self.prompt_id,
            message=f"Queued in ComfyUI ({self.backend.name})",
        )
        if job is None:  # stopped while we were submitting
            await self.withdraw()
            raise _Done()
        self.job = job

    async def posted(self, timeout_s: float) -> None:
        """Wait (at most `timeout_s`) for a submit under way to end, however it ends."""
        post = self.posting
        if post is None or post.done():
            return
        with suppress(Exception, asyncio.CancelledError, TimeoutError):
            async with asyncio.timeout(timeout_s):
                await asyncio.shield(post)

    async def withdraw(self) -> None:
        """Take our prompt back out of ComfyUI (pending: delete; running: interrupt).
        Best effort: a backend that cannot be reached is logged, not raised."""
        if self.prompt_id is None:
            return
        try:
            await self.backend.client.delete_queued([self.prompt_id])
            await self.backend.client.interrupt(self.prompt_id)
        except ComfyError as exc:
            log.warning(
                "job %s: could not withdraw prompt %s: %s", self.job.id, self.prompt_id, exc
            )

    # -- following -------------------------------------------------------------------------

    async def _follow(self, events: asyncio.Queue[ComfyEvent]) -> None:
        while True:
            try:
                # asyncio.timeout, not wait_for: on 3.11 a cancellation (a stop) that lands as
                # wait_for times out comes back as TimeoutError, and the stopped job would
                # be followed on until it ended (a stop that took as long as the job).
                async with asyncio.timeout(self._tick_s()):
                    event = await events.get()
            except TimeoutError:
                now = time.monotonic()
                if now - max(self._last_event, self._last_resync) < self.idle_resync_s:
                    await self._tick()
                    continue
                # Nothing heard for a while: a half-open socket looks exactly like this.
                self._last_resync = now
                if await self._resync(events) == "running":
                    await self._check_stall()
                else:
                    self._last_event = time.monotonic()
                continue
            self._last_event = time.monotonic()
            if event.type not in (DISCONNECTED, RECONNECTED):
                self.heard_from_backend = True
            if await self._handle(event, events):
                return

    def _tick_s(self) -> float:
        expected = self.progress.expected_s if self.progress is not None else None
        if expected is None:
            return TICK_S
        low, high = TICK_RANGE_S
        return min(max(expected / TICKS_PER_RUN, low), high)

    async def _tick(self) -> None:
        """Time passes in a node that reports nothing: show it."""
        assert self.progress is not None
        if self.job.status is not JobStatus.RUNNING:
            return
        self.progress.tick()
        if self.progress.percent - self._shown >= TICK_POINTS:
            await self._write_progress()

    async def _check_stall(self) -> None:
        silent = time.monotonic() - self._last_event
        if self.stall_timeout_s <= 0 or silent < self.stall_timeout_s:
            return
        text = (
            f"ComfyUI at {self.backend.name} reported nothing for {silent:.0f} s while running "
            "this job (JOB_STALL_TIMEOUT_S); it was interrupted. Check the ComfyUI console."
        )
        log.warning("job %s prompt=%s: %s", self.job.id, self.prompt_id, text)
        await self.withdraw()
        await self._finish(Outcome(JobStatus.FAILED, {"error": text, "message": text}))
        raise _Done()

    async def _handle(self, event: ComfyEvent, events: asyncio.Queue[ComfyEvent]) -> bool:
        """Apply one event; True when the job is finished."""
        progress = self.progress
        assert progress is not None
        kind, data = event.type, event.data
        if kind == "execution_start":
            progress.started()
            await self._set_running()
        elif kind == "execution_cached":
            progress.cached([str(n) for n in data.get("nodes", [])])
            await self._write_progress()
        elif kind == "executing":
            node = data.get("node")
            if node is None:
                progress.finished_running()
                await self._finish_from_history()
                return True
            if self.job.status is not JobStatus.RUNNING:
                progress.started()
                await self._set_running()
            progress.executing(str(node))
            await self._write_progress()
        elif kind == "progress":
            value, maximum = float(data.get("value", 0)), float(data.get("max", 1))
            progress.progress(str(data.get("node")), value, maximum)
            await self._write_progress()
        elif kind == "executed":
            progress.executed(str(data.get("node")))
            await self._write_progress()
        elif kind == "execution_success":
            self._success = True
        elif kind in ("execution_error", "execution_interrupted"):
            pass  # the outcome is read from /history once `executing {node: null}` arrives
        elif kind == RECONNECTED:
            await self._resync(events)
        elif kind == DISCONNECTED:
            # The dispatcher waits (bounded) for the backend, then re-attaches or retries.
            raise ComfyUnavailable(
                f"Connection to ComfyUI at {self.backend.name} lost; reconnecting"
            )
        return False

    async def _resync(self, events: asyncio.Queue[ComfyEvent]) -> str:
        """Find out where the prompt is after events may have been missed: "running",
        "pending", or "finished" (its end is then queued as an event)."""
        assert self.prompt_id is not None
        queue = await self.backend.client.queue()
        self.heard_from_backend = True
        if self.prompt_id in queue.running:
            if self.job.status is not JobStatus.RUNNING:
                assert self.progress is not None
                self.progress.started()
                await self._set_running()
            return "running"
        if self.prompt_id in queue.pending:
            return "pending"
        entry = await self.backend.client.history(self.prompt_id)
        if entry is None:
            raise Lost(
                f"ComfyUI at {self.backend.name} no longer knows this job "
                "(it was probably restarted or its queue was cleared)"
            )
        events.put_nowait(
            ComfyEvent(type="executing", data={"node": None, "prompt_id": self.prompt_id})
        )
        return "finished"

    async def _set_running(self) -> None:
        self.backend.current_job = self.job.id
        now = utcnow()
        job = await self.writer.update(
            self.job.id,
            expect=ACTIVE,
            expect_prompt_id=self.prompt_id,  # requeued meanwhile (by anyone): not ours now
            status=JobStatus.RUNNING,
            started_at=self.job.started_at or now,
            message="Generating video",
            **(self.progress.snapshot() if self.progress else {}),
        )
        if job is not None:
            self.job = job

    async def _write_progress(self, *, persist: bool = False) -> None:
        """Show the progress now; write it to the database when `persist` or when the last
        write is PROGRESS_PERSIST_S old (a restart resumes from there)."""
        assert self.progress is not None
        snap = self.progress.snapshot()
        self._shown = self.progress.percent
        stage = snap["stage"]
        message = f"{stage.capitalize()}"
        if snap["step"] and snap["steps"]:
            message += f" (step {snap['step']}/{snap['steps']})"
        now = time.monotonic()
        # Shown without a write only while the writer has this job running (re-attached
        # after a restart: not yet; the write checks it is still active).
        unwritten = self.job.id not in self.writer.running
        if persist or unwritten or now - self._last_persist >= PROGRESS_PERSIST_S:
            self._last_persist = now
            job = await self.writer.update(
                self.job.id,
                expect=ACTIVE,
                expect_prompt_id=self.prompt_id,
                message=message,
                **snap,
            )
            if job is not None:
                self.job = job
            return
        self.job = self.writer.progress(self.job, message=message, **snap)

    # -- the end ---------------------------------------------------------------------------

    async def _finish_from_history(self) -> None:
        assert self.prompt_id is not None
        entry: HistoryEntry | None = await self.backend.client.history(self.prompt_id)
        if entry is None:
            raise Lost(f"ComfyUI at {self.backend.name} finished the job but kept no history of it")
        if entry.succeeded:
            await self._store_outputs(entry)
            return
        failure = entry.failure
        if failure is not None and failure.interrupted:
            outcome = Outcome(
                JobStatus.CANCELLED, {"message": "Interrupted in ComfyUI", "error": None}
            )
        else:
            text = failure.describe() if failure else "ComfyUI reported an error without details"
            outcome = Outcome(JobStatus.FAILED, {"error": text, "message": text})
        await self._finish(outcome)

    async def _store_outputs(self, entry: HistoryEntry) -> None:
        assert self.progress is not None
        files = [f for f in entry.outputs if f.type == "output"]
        if not files:
            text = "ComfyUI finished but the workflow saved no output file"
            await self._finish(Outcome(JobStatus.FAILED, {"error": text, "message": text}))
            return
        self.progress.storing()
        await self._write_progress(persist=True)  # a phase of its own (storing)
        try:
            records = await self.outputs.save(self.job.id, self.backend.client, files)
        except ComfyUnavailable:
            raise
        except ComfyError as exc:
            await self._finish(
                Outcome(JobStatus.FAILED, {"error": exc.message, "message": exc.message})
            )
            return
        except StoreError as exc:  # the output store (a bucket) refused or could not be reached
            text = f"The video could not be stored: {exc.message}"
            await self._finish(Outcome(JobStatus.FAILED, {"error": text, "message": text}))
            return
        # Learned before the job reads completed, so what a client reads next includes it.
        self.progress.stored()
        await self._learn()
        try:
            done = await self._finish(
                Outcome(
                    JobStatus.COMPLETED,
                    {
                        "outputs": records,
                        "progress": 100.0,
                        "stage": "done",
                        "eta_s": 0.0,
                        "message": "Video ready",
                        "error": None,
                    },
                )
            )
        except Exception:
            # Not recorded (the database refused the write): files no job names would be
            # half-kept. On cancellation they stay: the write may have landed, and a
            # re-attach stores them again under the same names.
            await self.outputs.discard([r.filename for r in records])
            raise
        if done is None:  # stopped meanwhile: keep nothing
            await self.outputs.discard([r.filename for r in records])

    async def _finish(self, outcome: Outcome, *, check_prompt: bool = True) -> Job | None:
        now = utcnow()
        attempts = self.job.attempts_with_last(
            status=outcome.status, finished_at=now, error=outcome.fields.get("error")
        )
        job = await self.writer.update(
            self.job.id,
            expect=ACTIVE,
            expect_prompt_id=self.prompt_id if check_prompt else None,
            status=outcome.status,
            finished_at=now,
            attempts=attempts,
            **outcome.fields,
        )
        if job is not None:
            self.job = job
            self.backend.jobs_done += 1
        if self.backend.current_job == self.job.id:
            self.backend.current_job = None
        return job


class _Done(Exception):
    """Internal: the job reached its end during submit."""
