"""The job record and its lifecycle.

pending ──start──► queued ──► running ──► completed
   ▲                 │           │  └───► failed
   └──── start ◄─────┴── stop ───┴──────► cancelled     (start again = a new attempt)
"""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field


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


ACTIVE = (JobStatus.QUEUED, JobStatus.RUNNING)
STARTABLE = (JobStatus.PENDING, JobStatus.CANCELLED, JobStatus.FAILED)


class OutputRecord(BaseModel):
    """One stored output file (relative to the outputs folder)."""

    filename: str
    content_type: str
    size_bytes: int
    node_id: str
    comfy_filename: str
    width: int | None = None
    height: int | None = None
    frames: int | None = None
    fps: float | None = None
    duration_s: float | None = None


class Attempt(BaseModel):
    number: int
    status: JobStatus
    backend: str | None = None
    prompt_id: str | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    error: str | None = None


class Job(BaseModel):
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
    def seed(self) -> int | None:
        value = self.params.get("seed")
        return int(value) if value is not None else None
