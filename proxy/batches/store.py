"""Persistence of batches and scene sessions (SQLAlchemy Core; SQLite or PostgreSQL).

A batch is an ordered list of items, one job each; the jobs themselves live in `jobs` and
carry the batch id. The item order is the prompt (or scene) order every surface shows. A
scene session holds named scene descriptions, the parameters shared by its scenes, the batch
that generated them last, and the videos of that batch once it has finished.

Rows change only by compare-and-set on `version`, so two requests replacing the same item
(two regenerations of one scene, say) cannot silently lose one of the jobs.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, Field
from sqlalchemy import (
    JSON,
    Column,
    DateTime,
    Integer,
    String,
    Table,
    delete,
    func,
    insert,
    select,
    update,
)

from proxy.db import Database, JSONType, metadata

batches_table = Table(
    "batches",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("kind", String(16), nullable=False),  # "portal" (seed 004) or "scenes" (seed 003)
    Column("surface", String(32), nullable=False),
    Column("workflow", String(128), nullable=False),
    # Parameters shared by every item (each item adds its own prompt).
    Column("params", JSONType, nullable=False),
    # [{"job_id", "prompt", "label"}, ...] in prompt (scene) order.
    Column("items", JSONType, nullable=False),
    Column("session_id", String(64), index=True),
    # Who created it (`Principal.owner`): only they, and admins, see it.
    Column("client_key", String(128), index=True),
    # The joined video of a scenes batch: {"filename", "jobs": [ids it was made from], ...}.
    Column("final", JSONType),
    Column("version", Integer, nullable=False, default=1),
    Column("created_at", DateTime(timezone=True), nullable=False, index=True),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)

# Plain JSON, not JSONB: the order of a session's scenes and parameters is what people wrote.
scene_sessions_table = Table(
    "scene_sessions",
    metadata,
    Column("id", String(64), primary_key=True),
    # [{"scenario", "description"}, ...] in scene order.
    Column("scenes", JSON, nullable=False),
    Column("params", JSON, nullable=False),
    Column("client_key", String(128), index=True),
    Column("batch_id", String(64)),
    # [{"scenario", "video_url", "job_id"}, ...] of the last finished generation.
    Column("scene_videos", JSON, nullable=False),
    Column("version", Integer, nullable=False, default=1),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)


def utcnow() -> datetime:
    return datetime.now(UTC)


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=UTC)  # SQLite drops the zone


class BatchItem(BaseModel):
    job_id: str
    prompt: str
    label: str | None = None


class Batch(BaseModel):
    id: str
    kind: str
    surface: str
    workflow: str
    params: dict[str, Any] = Field(default_factory=dict)
    items: list[BatchItem] = Field(default_factory=list)
    session_id: str | None = None
    client_key: str | None = None
    final: dict[str, Any] | None = None
    version: int = 1
    created_at: datetime
    updated_at: datetime

    @property
    def job_ids(self) -> list[str]:
        return [item.job_id for item in self.items]


class Scene(BaseModel):
    scenario: str
    description: str


class SceneVideo(BaseModel):
    scenario: str
    video_url: str
    job_id: str


class SceneSession(BaseModel):
    id: str
    scenes: list[Scene] = Field(default_factory=list)
    params: dict[str, Any] = Field(default_factory=dict)
    client_key: str | None = None
    batch_id: str | None = None
    scene_videos: list[SceneVideo] = Field(default_factory=list)
    version: int = 1
    created_at: datetime
    updated_at: datetime

    def scene(self, scenario: str) -> Scene | None:
        return next((s for s in self.scenes if s.scenario == scenario), None)


def _batch_from_row(row: Any) -> Batch:
    data = dict(row._mapping)
    data["created_at"] = _aware(data["created_at"])
    data["updated_at"] = _aware(data["updated_at"])
    return Batch.model_validate(data)


def _session_from_row(row: Any) -> SceneSession:
    data = dict(row._mapping)
    data["created_at"] = _aware(data["created_at"])
    data["updated_at"] = _aware(data["updated_at"])
    return SceneSession.model_validate(data)


class BatchStore:
    """Batches and scene sessions; the `Database` belongs to the app lifespan."""

    def __init__(self, db: Database) -> None:
        self.db = db

    # -- batches ---------------------------------------------------------------------------

    async def insert_batch(self, batch: Batch) -> None:
        row = batch.model_dump(mode="json")
        row["created_at"], row["updated_at"] = batch.created_at, batch.updated_at
        async with self.db.transaction() as conn:
            await conn.execute(insert(batches_table).values(**row))

    async def get_batch(self, batch_id: str) -> Batch | None:
        query = select(batches_table).where(batches_table.c.id == batch_id)
        async with self.db.engine.connect() as conn:
            row = (await conn.execute(query)).first()
        return _batch_from_row(row) if row else None

    async def list_batches(
        self,
        *,
        kind: str | None = None,
        client_key: str | None = None,
        limit: int | None = None,
        offset: int = 0,
    ) -> list[Batch]:
        """Newest first."""
        query = select(batches_table)
        if kind is not None:
            query = query.where(batches_table.c.kind == kind)
        if client_key is not None:
            query = query.where(batches_table.c.client_key == client_key)
        query = query.order_by(batches_table.c.created_at.desc(), batches_table.c.id).offset(offset)
        if limit is not None:
            query = query.limit(limit)
        async with self.db.engine.connect() as conn:
            rows = (await conn.execute(query)).all()
        return [_batch_from_row(row) for row in rows]

    async def count_batches(self, *, kind: str | None = None, client_key: str | None = None) -> int:
        query = select(func.count()).select_from(batches_table)
        if kind is not None:
            query = query.where(batches_table.c.kind == kind)
        if client_key is not None:
            query = query.where(batches_table.c.client_key == client_key)
        async with self.db.engine.connect() as conn:
            return int((await conn.execute(query)).scalar_one())

    async def update_batch(self, batch: Batch, **fields: Any) -> Batch | None:
        """Set fields if the row is still at `batch.version`; None when another writer won."""
        values = {
            key: [v.model_dump(mode="json") for v in value] if key == "items" else value
            for key, value in fields.items()
        }
        values.update(version=batch.version + 1, updated_at=utcnow())
        async with self.db.transaction() as conn:
            result = await conn.execute(
                update(batches_table)
                .where(batches_table.c.id == batch.id)
                .where(batches_table.c.version == batch.version)
                .values(**values)
            )
            if result.rowcount == 0:
                return None
            row = (
                await conn.execute(select(batches_table).where(batches_table.c.id == batch.id))
            ).first()
        return _batch_from_row(row) if row else None

    async def delete_batch(self, batch_id: str) -> bool:
        async with self.db.transaction() as conn:
            result = await conn.execute(delete(batches_table).where(batches_table.c.id == batch_id))
        return result.rowcount > 0

    # -- scene sessions --------------------------------------------------------------------

    async def insert_session(self, session: SceneSession) -> None:
        row = session.model_dump(mode="json")
        row["created_at"], row["updated_at"] = session.created_at, session.updated_at
        async with self.db.transaction() as conn:
            await conn.execute(insert(scene_sessions_table).values(**row))

    async def get_session(self, session_id: str) -> SceneSession | None:
        query = select(scene_sessions_table).where(scene_sessions_table.c.id == session_id)
        async with self.db.engine.connect() as conn:
            row = (await conn.execute(query)).first()
        return _session_from_row(row) if row else None

    async def update_session(self, session: SceneSession, **fields: Any) -> SceneSession | None:
        """Set fields if the row is still at `session.version`; None when another writer won."""
        values = {
            key: [v.model_dump(mode="json") for v in value]
            if key in ("scenes", "scene_videos")
            else value
            for key, value in fields.items()
        }
        values.update(version=session.version + 1, updated_at=utcnow())
        table = scene_sessions_table
        async with self.db.transaction() as conn:
            result = await conn.execute(
                update(table)
                .where(table.c.id == session.id)
                .where(table.c.version == session.version)
                .values(**values)
            )
            if result.rowcount == 0:
                return None
            row = (await conn.execute(select(table).where(table.c.id == session.id))).first()
        return _session_from_row(row) if row else None

    async def delete_session(self, session_id: str) -> bool:
        table = scene_sessions_table
        async with self.db.transaction() as conn:
            result = await conn.execute(delete(table).where(table.c.id == session_id))
        return result.rowcount > 0
