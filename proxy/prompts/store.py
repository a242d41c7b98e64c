"""Prompt refinement sessions, persisted in the `prompt_sessions` table.

A session holds the current prompt, its parameters, and an append-only history. Entries are
only ever appended, under a write lock (a row lock on PostgreSQL, the database write lock on
SQLite), so concurrent updates of one session keep every entry and history indices stay
valid for `generate-variations`.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, Field
from sqlalchemy import JSON, Column, DateTime, String, Table, Text, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

from proxy.db import Database, metadata

DEFAULT_SESSION = "default"

# Plain JSON (`json` on PostgreSQL, not the project's usual JSONB): JSONB reorders object keys,
# and the order of a prompt's parameters is what the UI shows. Nothing queries inside them.

prompt_sessions = Table(
    "prompt_sessions",
    metadata,
    Column("id", String(64), primary_key=True),
    # The current prompt and its parameters; both NULL until the session is initialized.
    Column("prompt", Text, nullable=True),
    Column("parameters", JSON, nullable=True),
    # [{"prompt": str, "parameters": {...}, "description": str}, ...], oldest first.
    Column("history", JSON, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)


class HistoryEntry(BaseModel):
    """One prompt in a session's history."""

    prompt: str
    parameters: dict[str, Any] = Field(default_factory=dict)
    description: str = ""


class PromptSession(BaseModel):
    """A session as stored; `prompt` and `parameters` are None until it is initialized."""

    id: str
    prompt: str | None = None
    parameters: dict[str, Any] | None = None
    history: list[HistoryEntry] = Field(default_factory=list)
    created_at: datetime
    updated_at: datetime

    @property
    def initialized(self) -> bool:
        return self.prompt is not None and self.parameters is not None


def new_session_id() -> str:
    return uuid.uuid4().hex


def _now() -> datetime:
    return datetime.now(UTC)


class PromptSessionStore:
    """Reads and appends to prompt sessions; the `Database` belongs to the app lifespan."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def create_table(self) -> None:
        """Create `prompt_sessions` if missing (for tests of this store alone; the proxy's
        tables come from its migrations)."""
        async with self._db.transaction() as conn:
            await conn.run_sync(lambda sync: prompt_sessions.create(sync, checkfirst=True))

    async def get(self, session_id: str) -> PromptSession | None:
        async with self._db.engine.connect() as conn:
            query = select(prompt_sessions).where(prompt_sessions.c.id == session_id)
            row = (await conn.execute(query)).first()
        return None if row is None else _to_session(row._mapping)

    async def append(
        self, session_id: str, entry: HistoryEntry, *, make_current: bool = True
    ) -> PromptSession:
        """Append `entry` to the session's history (creating the session if needed).

        With `make_current`, the entry's prompt and parameters become the session's current
        ones. The read and the write happen in one transaction under a write lock.
        """
        async with self._db.transaction() as conn:
            current = await self._lock(conn, session_id)
            now = _now()
            history = [*current.history, entry]
            values: dict[str, Any] = {
                "history": [h.model_dump() for h in history],
                "updated_at": now,
            }
            if make_current:
                values["prompt"] = entry.prompt
                values["parameters"] = entry.parameters
            await conn.execute(
                update(prompt_sessions).where(prompt_sessions.c.id == session_id).values(**values)
            )
        return current.model_copy(update={**values, "history": history})

    async def delete(self, session_id: str) -> bool:
        async with self._db.transaction() as conn:
            result = await conn.execute(
                prompt_sessions.delete().where(prompt_sessions.c.id == session_id)
            )
        return bool(result.rowcount)

    async def _lock(self, conn: AsyncConnection, session_id: str) -> PromptSession:
        """Make sure the row exists and hold its write lock until the transaction ends."""
        if self._db.is_sqlite:
            # SQLite has one writer at a time; take that lock before reading, or a writer
            # that commits between our read and our write would lose its history entry.
            await conn.exec_driver_sql("BEGIN IMMEDIATE")
        now = _now()
        fresh = {"id": session_id, "history": [], "created_at": now, "updated_at": now}
        dialect = sqlite if self._db.is_sqlite else postgresql
        await conn.execute(dialect.insert(prompt_sessions).values(**fresh).on_conflict_do_nothing())
        row = (
            await conn.execute(
                select(prompt_sessions).where(prompt_sessions.c.id == session_id).with_for_update()
            )
        ).one()
        return _to_session(row._mapping)


def _to_session(row: Any) -> PromptSession:
    return PromptSession(
        id=row["id"],
        prompt=row["prompt"],
        parameters=row["parameters"],
        history=row["history"] or [],
        created_at=_aware(row["created_at"]),
        updated_at=_aware(row["updated_at"]),
    )


def _aware(value: datetime) -> datetime:
    # SQLite hands back naive datetimes; everything we store is UTC.
    return value if value.tzinfo else value.replace(tzinfo=UTC)
