"""The job record and its lifecycle.

pending ──start──► queued ──► running ──► completed
   ▲                 │           │  └───► failed
   └──── start ◄─────┴── stop ───┴──────► cancelled     (start again = a new attempt)
"""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from proxy.media.storage import OutputRecord


class JobStatus(str, enum.Enum):
    PENDING = "pending"  # created with start=false; nothing sent to ComfyUI yet
    QUEUED = "queued"  # waiting for a backend, or waiting in a ComfyUI queue
    RUNNING = "running"  # ComfyUI is executing its prompt
    COMPLETED = "completed"  # outputs stored by the proxy
    FAILED = "failed"  # ComfyUI or the proxy reported an error (see `error`)
    CANCELLED = "cancelled"  # stopped by a user

    @property
    def active(self) -> bool:
        return self in (JobStatus.QUEUED, JobStatus.RUNNING)

    @property
    def finished(self) -> bool:
        return self in (JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELLED)


class JobPhase(str, enum.Enum):
    """Where a job is, in the core's words: what every surface translates into its seed's
    status words (one dict each). Derived from the persisted status and stage."""

    CREATED = "created"  # pending: created with start=false, not started
    WAITING = "waiting"  # queued in the proxy or in a ComfyUI queue
    RETRYING = "retrying"  # queued again after its backend lost it mid-run (already started)
    RUNNING = "running"  # ComfyUI is executing it
    STORING = "storing"  # ComfyUI has finished; the proxy is copying the outputs
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


# The stage a running job is in while the proxy stores its outputs (set by the progress
# tracker; the one stage that is also a phase).
STORING_STAGE = "storing output"

ACTIVE = (JobStatus.QUEUED, JobStatus.RUNNING)
STARTABLE = (JobStatus.PENDING, JobStatus.CANCELLED, JobStatus.FAILED)


class Attempt(BaseModel):
    number: int
    status: JobStatus
    backend: str | None = None
    prompt_id: str | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    error: str | None = None


class Job(BaseModel):
    # Shared: the store keeps recent jobs in memory and hands out the same object; a
    # change is a copy (`model_copy(update=...)`) written through the store.
    model_config = ConfigDict(frozen=True)

    id: str
    workflow: str
    status: JobStatus
    params: dict[str, Any]
    request: dict[str, Any] = Field(default_factory=dict)
    inputs: dict[str, Any] = Field(default_factory=dict)
    surface: str = "native"
    client_key: str | None = None
    batch_id: str | None = None
    label: str | None = None
    backend: str | None = None
    prompt_id: str | None = None
    progress: float = 0.0
    stage: str | None = None
    step: int | None = None
    steps: int | None = None
    eta_s: float | None = None
    message: str | None = None
    error: str | None = None
    outputs: list[OutputRecord] = Field(default_factory=list)
    attempt: int = 0
    attempts: list[Attempt] = Field(default_factory=list)
    retries: int = 0
    created_at: datetime
    updated_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None

    def attempts_with_last(self, **update: Any) -> list[Attempt]:
        """The attempts, with the current (last) one updated; unchanged when there is none."""
        attempts = list(self.attempts)
        if attempts:
            attempts[-1] = attempts[-1].model_copy(update=update)
        return attempts

    @property
    def video(self) -> OutputRecord | None:
        for output in self.outputs:
            if output.content_type.startswith("video/"):
                return output
        return self.outputs[0] if self.outputs else None

    @property
    def finished_video(self) -> OutputRecord | None:
        """The video, once the job has completed (None before)."""
        return self.video if self.status is JobStatus.COMPLETED else None

    @property
    def phase(self) -> JobPhase:
        if self.status is JobStatus.RUNNING and self.stage == STORING_STAGE:
            return JobPhase.STORING
        if self.status is JobStatus.QUEUED and (self.retries or self.started_at is not None):
            return JobPhase.RETRYING
        return phase_of(self.status)

    @property
    def seed(self) -> int | None:
        value = self.params.get("seed")
        return int(value) if value is not None else None


_PHASE_OF = {
    JobStatus.PENDING: JobPhase.CREATED,
    JobStatus.QUEUED: JobPhase.WAITING,
    JobStatus.RUNNING: JobPhase.RUNNING,
    JobStatus.COMPLETED: JobPhase.SUCCEEDED,
    JobStatus.FAILED: JobPhase.FAILED,
    JobStatus.CANCELLED: JobPhase.CANCELLED,
}


def phase_of(status: JobStatus) -> JobPhase:
    """The phase of a status alone (a running job may also be storing: see `Job.phase`)."""
    return _PHASE_OF[status]


def status_of(phase: JobPhase) -> JobStatus:
    """The persisted status a phase belongs to."""
    return _STATUS_OF.get(phase) or _DERIVED[phase]


_STATUS_OF = {phase: status for status, phase in _PHASE_OF.items()}
_DERIVED = {JobPhase.STORING: JobStatus.RUNNING, JobPhase.RETRYING: JobStatus.QUEUED}
