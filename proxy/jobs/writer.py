"""Every change to a job goes through here: persisted, published, and logged on state change."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any, Protocol

from proxy.jobs.bus import EventBus
from proxy.jobs.models import Job, JobStatus
from proxy.jobs.store import JobStore

log = logging.getLogger("proxy.jobs")


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

    async def create(self, job: Job) -> Job:
        await self.store.insert(job)
        self.bus.publish("created", job)
        log.info(
            "job %s %s workflow=%s surface=%s", job.id, job.status.value, job.workflow, job.surface
        )
        return job

    async def update(
        self,
        job_id: str,
        *,
        expect: Sequence[JobStatus] | None = None,
        expect_prompt_id: str | None = None,
        **fields: Any,
    ) -> Job | None:
        job = await self.store.update(
            job_id, expect=expect, expect_prompt_id=expect_prompt_id, **fields
        )
        if job is None:
            return None
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

    def _tell_finished(self, job: Job) -> None:
        for observer in self.observers:
            try:
                observer.finished(job)
            except Exception:  # the outcome is recorded; an observer's defect must not undo it
                log.exception("job %s: an observer failed on its end", job.id)

    async def deleted(self, job: Job) -> None:
        self.bus.publish("deleted", job)
        log.info("job %s deleted prompt=%s backend=%s", job.id, job.prompt_id, job.backend)
        for observer in self.observers:
            try:
                await observer.deleted(job)
            except Exception:  # the record is gone already; what is left is logged
                log.exception("job %s: an observer failed on its deletion", job.id)
