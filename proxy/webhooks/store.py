"""The webhook tables: per-job targets, and the outbox of deliveries (SQLAlchemy Core).

`webhook_targets` holds the callback URLs a create call named (WEBHOOK_URL is a setting, not a
row). `webhook_deliveries` is the outbox: one row per event and target, written before any
attempt to send it, so a delivery outlives the process that enqueued it. Its id is the
`webhook-id` the receiver sees on every attempt, derived from the job, the event and the
target, so enqueueing the same event twice (the end of a job seen by two paths) is a no-op.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import (
    Column,
    DateTime,
    Index,
    Integer,
    String,
    Table,
    Text,
    and_,
    delete,
    func,
    select,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

from proxy.db import Database, JSONType, metadata
from proxy.webhooks.targets import MAX_URL_LENGTH

targets_table = Table(
    "webhook_targets",
    metadata,
    Column("job_id", String(64), primary_key=True),
    Column("url", String(MAX_URL_LENGTH), primary_key=True),
    # The optional events asked for (job.started, job.progress); terminal ones always go.
    Column("events", JSONType, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    # The address the create call came to: the payload's URLs are absolute under it (unless
    # PUBLIC_URL is set). Null for rows older than this column.
    Column("base_url", String(2048)),
)

deliveries_table = Table(
    "webhook_deliveries",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("job_id", String(64), nullable=False, index=True),
    Column("target_url", String(MAX_URL_LENGTH), nullable=False),
    Column("event", String(32), nullable=False),
    # The exact body sent on every attempt (what the signature covers).
    Column("payload", Text, nullable=False),
    Column("status", String(16), nullable=False),
    Column("attempts", Integer, nullable=False),
    Column("last_status_code", Integer),
    Column("last_error", Text),
    # One entry per attempt (when, status code or error, how long), the newest LOG_SIZE.
    Column("attempt_log", JSONType, nullable=False),
    Column("next_attempt_at", DateTime(timezone=True)),
    # Past this, a delivery that keeps failing is given up (WEBHOOK_RETRY_HORIZON_S).
    Column("expires_at", DateTime(timezone=True), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("delivered_at", DateTime(timezone=True)),
    Index("ix_webhook_deliveries_due", "status", "next_attempt_at"),
)

LOG_SIZE = 50
_TIMES = ("next_attempt_at", "expires_at", "created_at", "delivered_at")


class DeliveryStatus(str, enum.Enum):
    PENDING = "pending"  # not delivered yet; sent when next_attempt_at comes
    DELIVERED = "delivered"  # the receiver answered 2xx
    FAILED = "failed"  # given up: a 3xx/4xx answer, or the retry horizon passed


@dataclass(frozen=True)
class Target:
    url: str
    events: tuple[str, ...]  # the optional events it asked for
    # The address its payloads' URLs are under (PUBLIC_URL, when set, wins).
    base: str | None = None

    def wants(self, event: str) -> bool:
        return event in self.events


@dataclass(frozen=True)
class Delivery:
    id: str
    job_id: str
    target_url: str
    event: str
    payload: str
    status: DeliveryStatus
    attempts: int
    last_status_code: int | None
    last_error: str | None
    attempt_log: list[dict[str, Any]]
    next_attempt_at: datetime | None
    expires_at: datetime
    created_at: datetime
    delivered_at: datetime | None

    def view(self) -> dict[str, Any]:
        """As the API lists it (the payload left out: it is the job, as its route shows it)."""

        def iso(value: datetime | None) -> str | None:
            return value.isoformat() if value is not None else None

        return {
            "id": self.id,
            "job_id": self.job_id,
            "event": self.event,
            "url": self.target_url,
            "status": self.status.value,
            "attempts": self.attempts,
            "last_status_code": self.last_status_code,
            "last_error": self.last_error,
            "attempt_log": self.attempt_log,
            "next_attempt_at": iso(self.next_attempt_at),
            "expires_at": iso(self.expires_at),
            "created_at": iso(self.created_at),
            "delivered_at": iso(self.delivered_at),
        }


def _utc(value: Any) -> Any:
    # SQLite drops the zone of a stored time.
    if isinstance(value, datetime) and value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value


def _delivery(row: Any) -> Delivery:
    data = dict(row._mapping)
    for key in _TIMES:
        data[key] = _utc(data[key])
    data["status"] = DeliveryStatus(data["status"])
    return Delivery(**data)


def _insert_ignoring_duplicates(conn: AsyncConnection, table: Table) -> Any:
    """An INSERT that skips rows whose primary key exists (both dialects say it their way)."""
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    return dialect.insert(table).on_conflict_do_nothing()


class WebhookStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    # -- targets ---------------------------------------------------------------------------

    async def save_target(self, job_id: str, target: Target, now: datetime) -> None:
        """Add a job's target, or replace the events of the one with the same URL."""
        t = targets_table.c
        async with self.db.transaction() as conn:
            await conn.execute(
                delete(targets_table).where(and_(t.job_id == job_id, t.url == target.url))
            )
            await conn.execute(
                targets_table.insert().values(
                    job_id=job_id,
                    url=target.url,
                    events=list(target.events),
                    created_at=now,
                    base_url=target.base,
                )
            )

    async def targets_of(self, job_id: str, conn: AsyncConnection | None = None) -> list[Target]:
        """A job's targets (read in `conn`, a transaction under way, when given)."""
        query = select(targets_table).where(targets_table.c.job_id == job_id)
        if conn is not None:
            rows = (await conn.execute(query)).all()
        else:
            async with self.db.engine.connect() as own:
                rows = (await own.execute(query)).all()
        return [Target(row.url, tuple(row.events), row.base_url) for row in rows]

    async def forget_job(self, job_id: str) -> None:
        """A deleted job: its targets and its finished deliveries go; pending ones stay until
        they end (the receiver is still told how the job ended)."""
        d = deliveries_table.c
        async with self.db.transaction() as conn:
            await conn.execute(delete(targets_table).where(targets_table.c.job_id == job_id))
            await conn.execute(
                delete(deliveries_table).where(
                    and_(d.job_id == job_id, d.status != DeliveryStatus.PENDING.value)
                )
            )

    # -- the outbox ------------------------------------------------------------------------

    async def enqueue(
        self, rows: Sequence[dict[str, Any]], conn: AsyncConnection | None = None
    ) -> None:
        """Insert new pending deliveries (each a full row); ones already there (the same id)
        are left as they are. In `conn`, a transaction under way, when given."""
        if not rows:
            return
        if conn is not None:
            await conn.execute(_insert_ignoring_duplicates(conn, deliveries_table), rows)
            return
        async with self.db.transaction() as own:
            await own.execute(_insert_ignoring_duplicates(own, deliveries_table), rows)

    async def due(
        self, now: datetime, limit: int, busy: Sequence[str], hold_s: float = 0.0
    ) -> list[Delivery]:
        """Up to `limit` pending deliveries due by `now`, the longest due first, leaving out
        those being sent (`busy`), claimed for `hold_s`: their next attempt is put off by
        that long, so another replica reading the outbox meanwhile leaves them alone (rows
        another one is claiming are skipped, not waited for: SKIP LOCKED). A claimer that
        dies lets them fall due again when the hold ends; one that sends records the
        outcome, which replaces the hold."""
        d = deliveries_table.c
        query = (
            select(deliveries_table)
            .where(and_(d.status == DeliveryStatus.PENDING.value, d.next_attempt_at <= now))
            .order_by(d.next_attempt_at, d.created_at, d.id)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
        if busy:
            query = query.where(d.id.not_in(list(busy)))
        async with self.db.transaction() as conn:
            rows = (await conn.execute(query)).all()
            if rows and hold_s > 0:
                await conn.execute(
                    update(deliveries_table)
                    .where(d.id.in_([row.id for row in rows]))
                    .values(next_attempt_at=now + timedelta(seconds=hold_s))
                )
        return [_delivery(row) for row in rows]

    async def next_due(self, busy: Sequence[str]) -> datetime | None:
        """When the next pending delivery not being sent is due (None: none is pending)."""
        d = deliveries_table.c
        query = select(func.min(d.next_attempt_at)).where(d.status == DeliveryStatus.PENDING.value)
        if busy:
            query = query.where(d.id.not_in(list(busy)))
        async with self.db.engine.connect() as conn:
            value = (await conn.execute(query)).scalar_one_or_none()
        result: datetime | None = _utc(value)
        return result

    async def record(self, delivery_id: str, **fields: Any) -> None:
        """Write an attempt's outcome (status, attempts, next_attempt_at, ...)."""
        async with self.db.transaction() as conn:
            await conn.execute(
                update(deliveries_table)
                .where(deliveries_table.c.id == delivery_id)
                .values(**fields)
            )

    async def get(self, job_id: str, delivery_id: str) -> Delivery | None:
        d = deliveries_table.c
        query = select(deliveries_table).where(and_(d.id == delivery_id, d.job_id == job_id))
        async with self.db.engine.connect() as conn:
            row = (await conn.execute(query)).first()
        return _delivery(row) if row else None

    async def list_for_job(self, job_id: str, *, limit: int, offset: int) -> list[Delivery]:
        """A job's deliveries, the newest event first."""
        d = deliveries_table.c
        query = (
            select(deliveries_table)
            .where(d.job_id == job_id)
            .order_by(d.created_at.desc(), d.id)
            .limit(limit)
            .offset(offset)
        )
        async with self.db.engine.connect() as conn:
            rows = (await conn.execute(query)).all()
        return [_delivery(row) for row in rows]

    async def count_for_job(self, job_id: str) -> int:
        query = select(func.count()).where(deliveries_table.c.job_id == job_id)
        async with self.db.engine.connect() as conn:
            return int((await conn.execute(query)).scalar_one())

    async def reschedule(
        self, job_id: str, delivery_id: str, now: datetime, expires_at: datetime
    ) -> Delivery | None:
        """Make a delivery pending and due now, retried until `expires_at` (a manual retry)."""
        d = deliveries_table.c
        async with self.db.transaction() as conn:
            result = await conn.execute(
                update(deliveries_table)
                .where(and_(d.id == delivery_id, d.job_id == job_id))
                .values(
                    status=DeliveryStatus.PENDING.value,
                    next_attempt_at=now,
                    expires_at=expires_at,
                    delivered_at=None,
                )
            )
        if not result.rowcount:
            return None
        return await self.get(job_id, delivery_id)

    async def prune(self, before: datetime) -> int:
        """Delete the finished deliveries (delivered or failed) of events before `before`."""
        d = deliveries_table.c
        async with self.db.transaction() as conn:
            result = await conn.execute(
                delete(deliveries_table).where(
                    and_(d.status != DeliveryStatus.PENDING.value, d.created_at < before)
                )
            )
        return int(result.rowcount or 0)
