"""What a job leaves in ComfyUI, taken out again once the proxy no longer needs it.

ComfyUI keeps a history entry for every prompt, the output files it saved (in its `output/`
folder, still served by its `/view`) and the inputs it was sent (its `input/` folder), forever.
The proxy keeps its own copy of each output (`OutputStore`) and of each input (the uploads
folder, from which a new attempt uploads again), so ComfyUI's copies only double the disk use
once a job has ended:

- a job that reaches its end (completed, failed, cancelled) after its prompt reached ComfyUI:
  once ComfyUI is done with the prompt, the files its history entry names are removed from
  ComfyUI's output folder and the entry from its history; for a completed job also its inputs
  from ComfyUI's input folder (a completed job never runs again; a failed or cancelled one may
  be started again, and its new attempt may be using the very same upload name by then);
- a deleted job (`DELETE`, or retention): its inputs and outputs at once, and the history of
  every prompt it had.

Files are touched only where the proxy knows ComfyUI's folders (`COMFYUI_OUTPUT_DIR`,
`COMFYUI_INPUT_DIR`, or the ComfyUI / stand-in the launcher started), only by the exact names
the job recorded or the history entry gives (never a glob), and never outside those folders.
Everything here is best effort: it runs after the outcome is recorded, in tasks of its own
with bounded waits, and a failure is logged, never raised into the job.

`Retention` (optional, `JOB_RETENTION_DAYS`) deletes finished jobs older than that, through
`JobService.delete`, so it cleans up exactly as a `DELETE` does.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine, Iterable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio.to_thread

from proxy.comfy.models import RECONNECTED
from proxy.errors import ComfyError, NotFound
from proxy.jobs.backends import Backend, BackendPool
from proxy.jobs.models import Job, JobStatus
from proxy.jobs.store import utcnow
from proxy.settings import Settings

if TYPE_CHECKING:
    from proxy.jobs.service import JobService

log = logging.getLogger("proxy.cleanup")

# One ComfyUI request of the cleanup. Shorter than the client's own timeout: nobody waits for
# the answer, and a ComfyUI that is slow to answer is better left alone.
CALL_TIMEOUT_S = 10.0
# How long to wait for ComfyUI to be done with a prompt the proxy has given up on (an interrupt
# lands between sampler steps or nodes; a long VAE decode cannot be interrupted). Past it the
# entry is left in ComfyUI's history (logged).
SETTLE_TIMEOUT_S = 600.0
# While the prompt is still in ComfyUI's queue, look again at least this often (an end event
# can be missed across a websocket reconnect).
RECHECK_S = 5.0
# The messages after which a prompt may have left ComfyUI's queue.
END_EVENTS = frozenset({"execution_success", "execution_error", "execution_interrupted"})

# Retention: one round deletes at most this many jobs; a full round is followed by the next
# one at once, otherwise the sweep waits for the interval.
RETENTION_PAGE = 100
RETENTION_INTERVAL_S = 600.0


class UnsafePath(ValueError):
    """A name that would reach outside ComfyUI's folder."""


def inside(root: Path, name: str) -> Path:
    """`root / name`, resolved (symlinks too), refused when it lands outside `root` or on
    `root` itself. Blocking: call it from a worker thread."""
    if not name or "\x00" in name or Path(name).is_absolute():
        raise UnsafePath(f"{name!r} is not a name inside {root}")
    base = root.resolve()
    target = (base / name).resolve()
    if target == base or not target.is_relative_to(base):
        raise UnsafePath(f"{name!r} resolves outside {root}")
    return target


def _remove(root: Path, names: list[str]) -> list[str]:
    """Remove the named files under `root`; the names removed. Blocking (a worker thread)."""
    removed = []
    for name in names:
        try:
            target = inside(root, name)
        except UnsafePath as exc:
            log.warning("cleanup: refused to remove %s", exc)
            continue
        try:
            target.unlink()
        except FileNotFoundError:
            continue
        except OSError as exc:
            log.warning("cleanup: could not remove %s from %s: %s", name, root, exc)
            continue
        removed.append(name)
    return removed


@dataclass(frozen=True)
class ComfyFolders:
    """ComfyUI's folders on this machine, where known (None: leave that side alone)."""

    output: Path | None = None
    input: Path | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> ComfyFolders:
        return cls(output=settings.comfyui_output_dir, input=settings.comfyui_input_dir)


def input_names(job: Job) -> list[str]:
    """The names the job's inputs have in ComfyUI's input folder."""
    names: list[str] = []
    for info in (job.inputs or {}).values():
        if not isinstance(info, dict):
            continue
        for key in ("upload_name", "comfy_name"):
            value = info.get(key)
            if isinstance(value, str) and value and value not in names:
                names.append(value)
    return names


def output_names(job: Job) -> list[str]:
    """The ComfyUI output files the proxy copied (`subfolder/filename`)."""
    return [o.comfy_filename for o in job.outputs if o.comfy_filename]


class ComfyCleanup:
    """A `JobWriter` observer: told of every job that reaches its end and of every deleted
    job, after the store has recorded it. Owns its tasks; the lifespan closes it."""

    def __init__(
        self,
        pool: BackendPool,
        folders: ComfyFolders,
        *,
        call_timeout_s: float = CALL_TIMEOUT_S,
        settle_timeout_s: float = SETTLE_TIMEOUT_S,
    ) -> None:
        self.pool = pool
        self.folders = folders
        self.call_timeout_s = call_timeout_s
        self.settle_timeout_s = settle_timeout_s
        # One task per prompt: a job that is stopped and then deleted asks twice.
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._closed = False

    # -- the observer ----------------------------------------------------------------------

    def finished(self, job: Job) -> None:
        """The job has just been recorded completed, failed or cancelled."""
        if job.prompt_id is None:
            return  # it never reached ComfyUI
        completed = job.status is JobStatus.COMPLETED
        self._spawn(
            job.prompt_id,
            self._clean_prompt(
                job,
                job.backend,
                job.prompt_id,
                outputs=output_names(job) if completed else [],
                inputs=input_names(job) if completed else [],
                # A completed job's prompt has left ComfyUI's queue (its history was read to
                # store the outputs), and its files are the ones recorded: nothing to ask.
                known_done=completed,
            ),
        )

    async def deleted(self, job: Job) -> None:
        """The job's record is gone: its files go now (local removals, quick), the history of
        its prompts in the background."""
        await self.remove_files(self.folders.output, output_names(job), job)
        await self.remove_files(self.folders.input, input_names(job), job)
        # Every attempt's prompt: an earlier one's entry may have outlived its cleanup (a
        # ComfyUI that could not be reached then, or a proxy that stopped meanwhile).
        prompts: dict[str, str | None] = {
            a.prompt_id: a.backend for a in job.attempts if a.prompt_id is not None
        }
        if job.prompt_id is not None:
            prompts[job.prompt_id] = job.backend
        for prompt_id, backend_name in prompts.items():
            self._spawn(
                prompt_id, self._clean_prompt(job, backend_name, prompt_id, outputs=[], inputs=[])
            )

    # -- lifecycle -------------------------------------------------------------------------

    async def idle(self) -> None:
        """Wait until every cleanup started so far has ended (tests bound this wait)."""
        while pending := [t for t in self._tasks.values() if not t.done()]:
            await asyncio.wait(pending)

    async def close(self) -> None:
        """Stop what is still under way: what it would have removed stays in ComfyUI."""
        self._closed = True
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._tasks.clear()

    def _spawn(self, prompt_id: str, work: Coroutine[Any, Any, None]) -> None:
        if self._closed or prompt_id in self._tasks:
            work.close()
            return
        task = asyncio.create_task(self._guarded(prompt_id, work), name=f"cleanup:{prompt_id}")
        self._tasks[prompt_id] = task

        def forget(_: asyncio.Task[None]) -> None:
            self._tasks.pop(prompt_id, None)

        task.add_done_callback(forget)

    @staticmethod
    async def _guarded(prompt_id: str, work: Coroutine[Any, Any, None]) -> None:
        # A defect here must not surface anywhere else: the job's outcome is already recorded.
        try:
            await work
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("cleanup of prompt %s failed", prompt_id)

    # -- the work --------------------------------------------------------------------------

    async def remove_files(self, root: Path | None, names: Iterable[str], job: Job) -> None:
        names = [n for n in names if n]
        if root is None or not names:
            return
        removed = await anyio.to_thread.run_sync(_remove, root, names)
        if removed:
            log.info("job %s: removed %s from ComfyUI's %s", job.id, ", ".join(removed), root)

    async def _clean_prompt(
        self,
        job: Job,
        backend_name: str | None,
        prompt_id: str,
        *,
        outputs: list[str],
        inputs: list[str],
        known_done: bool = False,
    ) -> None:
        backend = self.pool.get(backend_name)
        names = list(outputs)
        entry_found = known_done
        if backend is not None and not known_done:
            try:
                if await self._settled(backend, prompt_id):
                    async with asyncio.timeout(self.call_timeout_s):
                        entry = await backend.client.history(prompt_id)
                    if entry is not None:
                        entry_found = True
                        for file in entry.outputs:
                            name = f"{file.subfolder}/{file.filename}".lstrip("/")
                            if file.type == "output" and name not in names:
                                names.append(name)
                else:
                    log.info(
                        "job %s: prompt %s still in ComfyUI at %s after %.0f s; its history "
                        "entry is left there",
                        job.id,
                        prompt_id,
                        backend.name,
                        self.settle_timeout_s,
                    )
            except (ComfyError, TimeoutError) as exc:
                log.warning(
                    "job %s: could not read ComfyUI's history of prompt %s: %s",
                    job.id,
                    prompt_id,
                    exc or "timed out",
                )
        await self.remove_files(self.folders.output, names, job)
        await self.remove_files(self.folders.input, inputs, job)
        if backend is None or not entry_found:
            return
        try:
            async with asyncio.timeout(self.call_timeout_s):
                await backend.client.delete_history([prompt_id])
        except (ComfyError, TimeoutError) as exc:
            log.warning(
                "job %s: could not delete prompt %s from ComfyUI's history at %s: %s",
                job.id,
                prompt_id,
                backend.name,
                exc or "timed out",
            )
            return
        log.info("job %s: prompt %s deleted from ComfyUI's history", job.id, prompt_id)

    async def _settled(self, backend: Backend, prompt_id: str) -> bool:
        """Whether ComfyUI is done with the prompt (it is in neither its running nor its
        pending queue), waiting for that up to `settle_timeout_s`: a stop or a stall has only
        just asked ComfyUI to drop or interrupt it."""
        # Subscribed before the first look, so an end that comes in between is not missed.
        events = backend.socket.subscribe(prompt_id)
        try:
            async with asyncio.timeout(self.settle_timeout_s):
                while True:
                    async with asyncio.timeout(self.call_timeout_s):
                        queue = await backend.client.queue()
                    if prompt_id not in queue:
                        return True
                    await self._next_end(events)
        except TimeoutError:
            return False
        finally:
            backend.socket.unsubscribe(prompt_id, events)

    @staticmethod
    async def _next_end(events: asyncio.Queue[Any]) -> None:
        """Until the prompt's end may have come, or RECHECK_S has passed."""
        try:
            async with asyncio.timeout(RECHECK_S):
                while True:
                    event = await events.get()
                    if event.type in END_EVENTS or event.type == RECONNECTED:
                        return
                    if event.type == "executing" and event.data.get("node") is None:
                        return
        except TimeoutError:
            return


class Retention:
    """Deletes finished jobs whose end is older than `days`, a bounded page at a time, in a
    task the lifespan owns."""

    def __init__(
        self,
        jobs: JobService,
        days: float,
        *,
        interval_s: float = RETENTION_INTERVAL_S,
        page_size: int = RETENTION_PAGE,
    ) -> None:
        self.jobs = jobs
        self.days = days
        self.interval_s = interval_s
        self.page_size = page_size
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._loop(), name="retention")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def sweep(self) -> int:
        """One round: delete up to `page_size` jobs finished before the cutoff; how many."""
        cutoff = utcnow() - timedelta(days=self.days)
        deleted = 0
        for job in await self.jobs.store.finished_before(cutoff, limit=self.page_size):
            # Read again just before: a failed or cancelled job started again meanwhile is
            # active now, and `delete` would stop it.
            current = await self.jobs.store.get(job.id)
            if (
                current is None
                or not current.status.finished
                or current.finished_at is None
                or current.finished_at >= cutoff
            ):
                continue
            try:
                await self.jobs.delete(job.id)
            except NotFound:
                continue
            except Exception:
                log.exception("retention: could not delete job %s", job.id)
                continue
            deleted += 1
        if deleted:
            log.info(
                "retention: deleted %d finished job(s) older than %g day(s) (JOB_RETENTION_DAYS)",
                deleted,
                self.days,
            )
        return deleted

    async def _loop(self) -> None:
        while True:
            try:
                deleted = await self.sweep()
            except Exception:
                log.exception("retention: the sweep failed; trying again later")
                deleted = 0
            # A full page: more may be due, go on at once (other work runs in between).
            await asyncio.sleep(0 if deleted >= self.page_size else self.interval_s)
