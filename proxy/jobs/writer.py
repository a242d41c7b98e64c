"""Every change to a job goes through here: persisted, published, and logged on state change."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any, Protocol

from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection

from proxy.jobs.bus import EventBus
from proxy.jobs.models import ACTIVE, Job, JobStatus
from proxy.jobs.store import JobStore, Within, utcnow

log = logging.getLogger("proxy.jobs")

# What `progress` changes (and `flush` writes).
PROGRESS_FIELDS = ("progress", "stage", "step", "steps", "eta_s", "message")


class JobObserver(Protocol):
    """Told of every job that reaches its end and of every deleted job, once the store has
    it (the ComfyUI cleanup, `proxy.jobs.cleanup`): every path that ends or deletes a job
    (tracker, dispatcher, stop, delete, retention) goes through this writer."""

    def finished(self, job: Job) -> None:
        """Must not block the writer: start work, do not wait for it."""

    async def deleted(self, job: Job) -> None: ...


class JobWriter:
    def __init__(self, store: JobStore, bus: EventBus) -> None:
        self.store = store
        self.bus = bus
        self.observers: list[JobObserver] = []
        # What is written in the transaction that records a job's end, so the two are one
        # (the webhook outbox's rows): `(conn, job)`, the job as it ends.
        self.end_records: list[Within] = []
        # The last progress of each running job not yet written (see `progress`), and the
        # jobs last written as running: progress of any other is never shown.
        self.live: dict[str, Job] = {}
        self.running: set[str] = set()

    async def create(self, job: Job) -> Job:
        await self.store.insert(job)
        self.bus.publish("created", job)
        log.info(
            "job %s %s workflow=%s surface=%s", job.id, job.status.value, job.workflow, job.surface
        )
        return job

    def progress(self, job: Job, **fields: Any) -> Job:
        """A running job's progress, shown at once and not written (the tracker writes it to
        the store now and then): published as a "progress" event, and kept here so a read
        of the job sees it (`current`) until the next write supersedes it."""
        if job.id not in self.running:  # stopped, failed or deleted meanwhile: not shown
            return job
        live = job.model_copy(update={**fields, "updated_at": utcnow()})
        self.live[job.id] = live
        self.bus.publish("progress", live)
        return live

    def current(self, job: Job) -> Job:
        """`job` as read from the store, or its newer live progress."""
        live = self.live.get(job.id)
        if live is None or live.updated_at <= job.updated_at or job.status is not live.status:
            return job
        return live

    def seen_elsewhere(self, job: Job, *, deleted: bool = False, live: bool = False) -> None:
        """Another replica changed this job (`proxy.replicas.relay`): show its live progress,
        or drop the one shown (a write or a deletion supersedes it). That replica runs it:
        nothing of this one's is written for it any more."""
        self.running.discard(job.id)
        if live:
            self.live[job.id] = job
        else:
            self.live.pop(job.id, None)

    async def flush(self, only: set[str] | None = None) -> None:
        """Write every progress not written yet (a stopping proxy, or a replica letting a
        backend go: the next one resumes from what was shown; after a crash, from the last
        write, at most PROGRESS_PERSIST_S old). `only`: those jobs' alone."""
        for job in [j for j in self.live.values() if j.id in self.running]:
            if only is not None and job.id not in only:
                continue
            fields = {name: getattr(job, name) for name in PROGRESS_FIELDS}
            try:
                await self.update(job.id, expect=ACTIVE, **fields)
            except SQLAlchemyError as exc:  # stopping anyway: the older figure stays
                log.warning("job %s: last progress not written: %s", job.id, exc)

    async def update(
        self,
        job_id: str,
        *,
        expect: Sequence[JobStatus] | None = None,
        expect_prompt_id: str | None = None,
        **fields: Any,
    ) -> Job | None:
        if fields.get("status", JobStatus.RUNNING) is not JobStatus.RUNNING:
            # Leaving running: no progress may be shown while this write is under way (it
            # would carry a later time than the write's and hide it from every live view).
            # If the write does not take, the next progress write marks it running again.
            self.running.discard(job_id)
        status = fields.get("status")
        ending = isinstance(status, JobStatus) and status.finished and self.end_records
        job = await self.store.update(
            job_id,
            expect=expect,
            expect_prompt_id=expect_prompt_id,
            within=self._record_end if ending else None,
            **fields,
        )
        if job is None:
            return None
        self.live.pop(job_id, None)
        if job.status is JobStatus.RUNNING:
            self.running.add(job_id)
        else:
            self.running.discard(job_id)
        self.bus.publish("updated", job)
        if "status" in fields:
            log.info(
                "job %s %s prompt=%s backend=%s%s",
                job.id,
                job.status.value,
                job.prompt_id,
                job.backend,
                f" error={job.error!r}" if job.error and job.status is JobStatus.FAILED else "",
            )
            if job.status.finished:
                self._tell_finished(job)
        return job

    async def _record_end(self, conn: AsyncConnection, job: Job) -> None:
        """Each end record, in a savepoint of the end's transaction: one that fails is
        logged and undone, and the end is still written (a job always ends)."""
        for record in self.end_records:
            try:
                async with conn.begin_nested():
                    await record(conn, job)
            except Exception:
                log.exception("job %s: what its end also records was not written", job.id)

    def _tell_finished(self, job: Job) -> None:
        for observer in self.observers:
            try:
                observer.finished(job)
            except Exception:  # the outcome is recorded; an observer's defect must not undo it
                log.exception("job %s: an observer failed on its end", job.id)

    async def deleted(self, job: Job) -> None:
        self.live.pop(job.id, None)
        self.running.discard(job.id)
        self.bus.publish("deleted", job)
        log.info("job %s deleted prompt=%s backend=%s", job.id, job.prompt_id, job.backend)
        for observer in self.observers:
            try:
                await observer.deleted(job)
            except Exception:  # the record is gone already; what is left is logged
                log.exception("job %s: an observer failed on its deletion", job.id)
