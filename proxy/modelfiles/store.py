"""The persisted download record: its lifecycle, its table, and the queries on it.

queued ──► running ──► completed
   ▲          │  ├───► failed
   │          │  └───► cancelled
   └──────────┘  (proxy shut down or restarted mid-download: resumed at next start)
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from enum import Enum
from typing import Any

from pydantic import BaseModel, computed_field
from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    Float,
    Select,
    String,
    Table,
    Text,
    and_,
    func,
    insert,
    or_,
    select,
    update,
)
from sqlalchemy.engine import RowMapping
from sqlalchemy.sql.elements import ColumnElement

from proxy.db import Database, metadata
from proxy.errors import NotFound


class DownloadStatus(str, Enum):
    # Waiting for a download slot (or for the proxy to start again after a restart).
    queued = "queued"
    # Verifying an existing file, hashing a partial one, or transferring bytes.
    running = "running"
    # The file is at its target path, size and checksum verified where known.
    completed = "completed"
    # Gave up; `error` says why and what to do. A kept `.part` file resumes on the next start.
    failed = "failed"
    # Stopped on request; the partial file was deleted.
    cancelled = "cancelled"


ACTIVE_STATUSES = (DownloadStatus.queued, DownloadStatus.running)
FINAL_STATUSES = (DownloadStatus.completed, DownloadStatus.failed, DownloadStatus.cancelled)

model_downloads = Table(
    "model_downloads",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("model_id", String(200), nullable=False, index=True),
    Column("filename", String(255), nullable=False),
    Column("folder", String(255), nullable=False),
    Column("target_path", Text, nullable=False),
    Column("source_url", Text, nullable=False),
    Column("status", String(16), nullable=False, index=True),
    # What a running download is doing right now ("downloading", "verifying", ...).
    Column("phase", String(200)),
    Column("bytes_done", BigInteger, nullable=False, default=0),
    Column("bytes_total", BigInteger),
    Column("speed_bytes_per_s", Float),
    # The sha256 of the finished file (computed while downloading), known or not beforehand.
    Column("sha256", String(64)),
    Column("error", Text),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    Column("finished_at", DateTime(timezone=True)),
    # The replica that runs it (replicas on PostgreSQL: each runs the downloads it queued,
    # and adopts those of replicas that are gone); None with a single process.
    Column("runner", String(128)),
)


class DownloadRecord(BaseModel):
    """One attempt to put one manifest file in place."""

    id: str
    model_id: str
    filename: str
    folder: str
    target_path: str
    source_url: str
    status: DownloadStatus
    phase: str | None = None
    bytes_done: int = 0
    bytes_total: int | None = None
    speed_bytes_per_s: float | None = None
    sha256: str | None = None
    error: str | None = None
    created_at: datetime
    updated_at: datetime
    finished_at: datetime | None = None

    @computed_field  # type: ignore[prop-decorator]
    @property
    def percent(self) -> float | None:
        """Progress of the current phase, 0-100 (None while the total is unknown)."""
        if self.status == DownloadStatus.completed:
            return 100.0
        if not self.bytes_total:
            return None
        return round(min(100.0, 100.0 * self.bytes_done / self.bytes_total), 1)

    @computed_field  # type: ignore[prop-decorator]
    @property
    def eta_s(self) -> float | None:
        """Seconds left at the current speed (None when not transferring)."""
        if self.status != DownloadStatus.running or not self.speed_bytes_per_s:
            return None
        if not self.bytes_total:
            return None
        return round(max(0, self.bytes_total - self.bytes_done) / self.speed_bytes_per_s, 1)

    @property
    def active(self) -> bool:
        return self.status in ACTIVE_STATUSES


def utcnow() -> datetime:
    return datetime.now(UTC)


def _aware(value: datetime | None) -> datetime | None:
    # SQLite hands back naive datetimes; everything we store is UTC.
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value


def _record(row: RowMapping) -> DownloadRecord:
    data = dict(row)
    for key in ("created_at", "updated_at", "finished_at"):
        data[key] = _aware(data[key])
    return DownloadRecord.model_validate(data)


class DownloadStore:
    """Reads and writes `model_downloads`; knows nothing of HTTP or files."""

    def __init__(self, database: Database) -> None:
        self.database = database
        self.table = model_downloads

    async def insert(self, **values: Any) -> DownloadRecord:
        now = utcnow()
        row = {
            "id": uuid.uuid4().hex,
            "bytes_done": 0,
            "created_at": now,
            "updated_at": now,
            **values,
        }
        async with self.database.transaction() as conn:
            await conn.execute(insert(self.table).values(**row))
        return DownloadRecord.model_validate(row)

    async def update(self, download_id: str, **values: Any) -> None:
        values["updated_at"] = utcnow()
        async with self.database.transaction() as conn:
            await conn.execute(
                update(self.table).where(self.table.c.id == download_id).values(**values)
            )

    async def requeue_running(
        self, runner: str | None = None, live: Sequence[str] = ()
    ) -> list[DownloadRecord]:
        """Mark downloads left running by a stopped proxy as queued again; the queued ones
        to resume now. With `runner` (a replica), only its own, those of no replica and those
        of replicas not `live`, which it adopts: another live replica's stay with it."""
        c = self.table.c
        unfinished = c.status.in_([DownloadStatus.running.value, DownloadStatus.queued.value])
        ours: ColumnElement[bool] = unfinished
        if runner is not None:
            ours = and_(
                unfinished,
                or_(c.runner.is_(None), c.runner == runner, c.runner.not_in([*live, runner])),
            )
        async with self.database.transaction() as conn:
            await conn.execute(
                update(self.table)
                .where(and_(ours, c.status == DownloadStatus.running.value))
                .values(
                    status=DownloadStatus.queued.value,
                    phase="interrupted; resuming",
                    speed_bytes_per_s=None,
                    updated_at=utcnow(),
                )
            )
            if runner is not None:
                await conn.execute(update(self.table).where(ours).values(runner=runner))
            rows = (
                (
                    await conn.execute(
                        select(self.table)
                        .where(and_(ours, c.status == DownloadStatus.queued.value))
                        .order_by(c.created_at, c.id)
                    )
                )
                .mappings()
                .all()
            )
        return [_record(row) for row in rows]

    async def get(self, download_id: str) -> DownloadRecord:
        async with self.database.engine.connect() as conn:
            row = (
                (await conn.execute(select(self.table).where(self.table.c.id == download_id)))
                .mappings()
                .first()
            )
        if row is None:
            raise NotFound(f"No model download {download_id!r}")
        return _record(row)

    async def list(
        self,
        *,
        model_id: str | None = None,
        statuses: tuple[DownloadStatus, ...] | None = None,
        limit: int | None = None,
        offset: int = 0,
        oldest_first: bool = False,
    ) -> list[DownloadRecord]:
        query = self._filtered(select(self.table), model_id, statuses)
        if oldest_first:
            query = query.order_by(self.table.c.created_at, self.table.c.id)
        else:
            query = query.order_by(self.table.c.created_at.desc(), self.table.c.id.desc())
        if offset:
            query = query.offset(offset)
        if limit is not None:
            query = query.limit(limit)
        async with self.database.engine.connect() as conn:
            rows = (await conn.execute(query)).mappings().all()
        return [_record(r) for r in rows]

    async def count(
        self,
        *,
        model_id: str | None = None,
        statuses: tuple[DownloadStatus, ...] | None = None,
    ) -> int:
        query = self._filtered(select(func.count()).select_from(self.table), model_id, statuses)
        async with self.database.engine.connect() as conn:
            return int((await conn.execute(query)).scalar_one())

    def _filtered(
        self,
        query: Select[Any],
        model_id: str | None,
        statuses: tuple[DownloadStatus, ...] | None,
    ) -> Select[Any]:
        if model_id is not None:
            query = query.where(self.table.c.model_id == model_id)
        if statuses:
            query = query.where(self.table.c.status.in_([s.value for s in statuses]))
        return query

    async def latest_by_model(self) -> dict[str, DownloadRecord]:
        """The newest record of every model that has one."""
        t = self.table
        newest = (
            select(t.c.model_id, func.max(t.c.created_at).label("newest"))
            .group_by(t.c.model_id)
            .subquery()
        )
        query = (
            select(t)
            .join(
                newest, and_(t.c.model_id == newest.c.model_id, t.c.created_at == newest.c.newest)
            )
            .order_by(t.c.id)
        )
        async with self.database.engine.connect() as conn:
            rows = (await conn.execute(query)).mappings().all()
        return {row["model_id"]: _record(row) for row in rows}
