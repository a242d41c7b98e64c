"""Persistence of jobs (SQLAlchemy Core; SQLite or PostgreSQL)."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from typing import Any, overload

from sqlalchemy import (
    Column,
    DateTime,
    Float,
    Integer,
    String,
    Table,
    Text,
    and_,
    delete,
    func,
    insert,
    select,
    update,
)
from sqlalchemy.ext.asyncio import AsyncConnection

from proxy.db import Database, JSONType, metadata
from proxy.jobs.models import Job, JobStatus

jobs_table = Table(
    "jobs",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("workflow", String(128), nullable=False),
    Column("status", String(16), nullable=False, index=True),
    Column("params", JSONType, nullable=False),
    Column("request", JSONType, nullable=False),
    Column("inputs", JSONType, nullable=False),
    Column("surface", String(32), nullable=False),
    Column("client_key", String(128), index=True),
    Column("batch_id", String(64), index=True),
    Column("label", String(256)),
    Column("backend", String(256)),
    Column("prompt_id", String(64), index=True),
    Column("progress", Float, nullable=False, default=0.0),
    Column("stage", String(64)),
    Column("step", Integer),
    Column("steps", Integer),
    Column("eta_s", Float),
    Column("message", Text),
    Column("error", Text),
    Column("outputs", JSONType, nullable=False),
    Column("attempt", Integer, nullable=False, default=0),
    Column("attempts", JSONType, nullable=False),
    Column("retries", Integer, nullable=False, default=0),
    Column("created_at", DateTime(timezone=True), nullable=False, index=True),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    Column("started_at", DateTime(timezone=True)),
    Column("finished_at", DateTime(timezone=True)),
)

_JSON_FIELDS = ("params", "request", "inputs", "outputs", "attempts")


def utcnow() -> datetime:
    return datetime.now(UTC)


def as_utc(value: datetime) -> datetime:
    """A time read from the database, aware (SQLite drops the zone: it was UTC)."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value


@overload
def iso_utc(value: datetime) -> str: ...
@overload
def iso_utc(value: None) -> None: ...
def iso_utc(value: datetime | None) -> str | None:
    """A time as ISO 8601 in UTC with a Z, as every answer and callback gives times."""
    if value is None:
        return None
    return as_utc(value).astimezone(UTC).isoformat().replace("+00:00", "Z")


def _to_row(job: Job) -> dict[str, Any]:
    row = job.model_dump(mode="json")
    for key in ("created_at", "updated_at", "started_at", "finished_at"):
        row[key] = getattr(job, key)
    row["status"] = job.status.value
    return row


def _from_row(row: Any) -> Job:
    data = dict(row._mapping)
    for key in ("created_at", "updated_at", "started_at", "finished_at"):
        value = data.get(key)
        if isinstance(value, datetime) and value.tzinfo is None:
            data[key] = value.replace(tzinfo=UTC)  # SQLite drops the zone
    return Job.model_validate(data)


def _column_values(fields: dict[str, Any]) -> dict[str, Any]:
    values = {}
    for key, value in fields.items():
        if isinstance(value, JobStatus):
            value = value.value
        elif key in _JSON_FIELDS:
            value = (
                [v.model_dump(mode="json") if hasattr(v, "model_dump") else v for v in value]
                if isinstance(value, list)
                else value
            )
        values[key] = value
    return values


# Work done inside the transaction of a job's update (`JobStore.update`).
Within = Callable[[AsyncConnection, Job], Awaitable[None]]

# Jobs kept in memory by id: the most recently read or written (a status poll is then
# served without a database round trip).
CACHE_SIZE = 2000


class JobStore:
    """Jobs in the database, and the recently used ones in memory.

    Every write of a job row in this process goes through here, so the memory copy is what
    the database holds; with replicas, the changes another replica makes reach here through
    `proxy.replicas.relay` (`seen_elsewhere`), within milliseconds, and every conditional
    write is decided by the database, not by this copy.
    """

    def __init__(self, db: Database, cache_size: int = CACHE_SIZE) -> None:
        self.db = db
        self._cache: OrderedDict[str, Job] = OrderedDict()
        self._cache_size = cache_size
        # Counts writes: a read that a write overtook may hold the older row, and is not
        # kept (the write has put the newer one in place).
        self._writes = 0

    def _forget(self, job_id: str) -> None:
        self._writes += 1
        self._cache.pop(job_id, None)

    def _keep(self, job: Job) -> Job:
        """Remember what was just written."""
        self._writes += 1
        return self._remember(job)

    def _remember(self, job: Job) -> Job:
        self._cache[job.id] = job
        self._cache.move_to_end(job.id)
        while len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)
        return job

    def peek(self, job_id: str) -> Job | None:
        """The copy in memory, if any (no database read)."""
        return self._cache.get(job_id)

    def seen_elsewhere(self, job: Job | None, job_id: str) -> None:
        """Another replica changed (or deleted, `job` None) this job: keep its newer row,
        or forget ours so the next read asks the database."""
        kept = self._cache.get(job_id)
        if job is None or (kept is not None and kept.updated_at > job.updated_at):
            self._forget(job_id)
        else:
            self._keep(job)

    def forget_all(self) -> None:
        """Changes from other replicas may have been missed (the relay reconnected)."""
        self._writes += 1
        self._cache.clear()

    async def insert(self, job: Job) -> None:
        async with self.db.transaction() as conn:
            await conn.execute(insert(jobs_table).values(**_to_row(job)))
        self._keep(job)

    async def insert_many(self, jobs: Sequence[Job]) -> None:
        """Several jobs in one transaction (imports, benchmarks: 10,000 in a second or so)."""
        if jobs:
            async with self.db.transaction() as conn:
                await conn.execute(insert(jobs_table), [_to_row(job) for job in jobs])
            self._writes += 1

    async def get(self, job_id: str) -> Job | None:
        kept = self._cache.get(job_id)
        if kept is not None:
            self._cache.move_to_end(job_id)
            return kept
        writes = self._writes
        async with self.db.engine.connect() as conn:
            row = (await conn.execute(select(jobs_table).where(jobs_table.c.id == job_id))).first()
        if row is None:
            return None
        job = _from_row(row)
        # Kept only when nothing was written meanwhile: a write that overtook this read has
        # put the newer row in place, and this one may be older.
        return self._remember(job) if writes == self._writes else job

    async def update(
        self,
        job_id: str,
        *,
        expect: Sequence[JobStatus] | None = None,
        expect_prompt_id: str | None = None,
        within: Within | None = None,
        **fields: Any,
    ) -> Job | None:
        """Set fields; with `expect`, only while the job is in one of those states.

        Returns the updated job, or None when the condition did not hold (another writer won:
        a stop beat a completion, say), so late events never overwrite a newer state.
        `within(conn, job)` runs in the same transaction once the row is written (what must
        be recorded with it or not at all: the callbacks of a job's end).
        """
        fields.setdefault("updated_at", utcnow())
        conditions = [jobs_table.c.id == job_id]
        if expect is not None:
            conditions.append(jobs_table.c.status.in_([s.value for s in expect]))
        if expect_prompt_id is not None:
            conditions.append(jobs_table.c.prompt_id == expect_prompt_id)
        async with self.db.transaction() as conn:
            result = await conn.execute(
                update(jobs_table).where(and_(*conditions)).values(**_column_values(fields))
            )
            if result.rowcount == 0:
                return None
            row = (await conn.execute(select(jobs_table).where(jobs_table.c.id == job_id))).first()
            job = _from_row(row) if row is not None else None
            if job is not None and within is not None:
                await within(conn, job)
        if job is None:
            self._forget(job_id)
            return None
        return self._keep(job)

    async def delete(self, job_id: str) -> bool:
        self._forget(job_id)
        async with self.db.transaction() as conn:
            result = await conn.execute(delete(jobs_table).where(jobs_table.c.id == job_id))
        self._forget(job_id)  # a read that overtook the delete is not kept either
        return result.rowcount > 0

    async def finished_before(self, cutoff: datetime, *, limit: int) -> list[Job]:
        """Up to `limit` finished jobs (completed, failed, cancelled) that ended before
        `cutoff`, the oldest end first (retention)."""
        finished = [s.value for s in JobStatus if s.finished]
        query = (
            select(jobs_table)
            .where(jobs_table.c.status.in_(finished))
            .where(jobs_table.c.finished_at.is_not(None))
            .where(jobs_table.c.finished_at < cutoff)
            .order_by(jobs_table.c.finished_at.asc(), jobs_table.c.id)
            .limit(limit)
        )
        async with self.db.engine.connect() as conn:
            rows = (await conn.execute(query)).all()
        return [_from_row(row) for row in rows]

    async def list(
        self,
        *,
        statuses: Sequence[JobStatus] | None = None,
        batch_id: str | None = None,
        client_key: str | None = None,
        backend: str | None = None,
        limit: int | None = None,
        offset: int = 0,
        oldest_first: bool = False,
    ) -> list[Job]:
        query = select(jobs_table)
        if statuses:
            query = query.where(jobs_table.c.status.in_([s.value for s in statuses]))
        if batch_id is not None:
            query = query.where(jobs_table.c.batch_id == batch_id)
        if client_key is not None:
            query = query.where(jobs_table.c.client_key == client_key)
        if backend is not None:
            query = query.where(jobs_table.c.backend == backend)
        order = jobs_table.c.created_at.asc() if oldest_first else jobs_table.c.created_at.desc()
        query = query.order_by(order, jobs_table.c.id).offset(offset)
        if limit is not None:
            query = query.limit(limit)
        async with self.db.engine.connect() as conn:
            rows = (await conn.execute(query)).all()
        return [_from_row(row) for row in rows]

    async def count(
        self, *, statuses: Sequence[JobStatus] | None = None, client_key: str | None = None
    ) -> int:
        query = select(func.count()).select_from(jobs_table)
        if statuses:
            query = query.where(jobs_table.c.status.in_([s.value for s in statuses]))
        if client_key is not None:
            query = query.where(jobs_table.c.client_key == client_key)
        async with self.db.engine.connect() as conn:
            return int((await conn.execute(query)).scalar_one())

    async def claim_next(self, choose: Callable[[Job], str | None]) -> Job | None:
        """Give the oldest job waiting in the proxy's own queue to the backend `choose(job)`
        names (None: leave it). With PostgreSQL the row is locked with SKIP LOCKED, so
        replicas claiming at once each get another job and never wait for each other; the
        conditional update keeps SQLite (one process) as safe."""
        c = jobs_table.c
        query = (
            select(jobs_table)
            .where(c.status == JobStatus.QUEUED.value)
            .where(c.backend.is_(None))
            .order_by(c.updated_at.asc(), c.id)
            .limit(1)
            .with_for_update(skip_locked=True)
        )
        while True:  # a lost race (SQLite) means that job is taken: at most one per job
            async with self.db.transaction() as conn:
                row = (await conn.execute(query)).first()
                if row is None:
                    return None
                job = _from_row(row)
                backend = choose(job)
                if backend is None:
                    return None
                now = utcnow()
                result = await conn.execute(
                    update(jobs_table)
                    .where(c.id == job.id)
                    .where(c.status == JobStatus.QUEUED.value)
                    .where(c.backend.is_(None))
                    .values(backend=backend, updated_at=now)
                )
            if result.rowcount:
                return self._keep(job.model_copy(update={"backend": backend, "updated_at": now}))
