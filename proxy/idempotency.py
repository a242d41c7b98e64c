"""What `Idempotency-Key` retries are answered from (`proxy.api.idempotency`): one row per
API key and key, holding the first answer (status, content type, body) once it has one."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Column, DateTime, Integer, LargeBinary, String, Table, and_, delete, select
from sqlalchemy.exc import IntegrityError

from proxy.db import Database, metadata
from proxy.jobs.store import utcnow

IDEMPOTENCY_TTL_S = 24 * 3600
MAX_KEY_LENGTH = 255
# A claim older than this with no answer was left by a proxy that stopped mid-request.
ABANDONED_S = 15 * 60

idempotency_table = Table(
    "idempotency_keys",
    metadata,
    Column("scope", String(64), primary_key=True),
    Column("key", String(MAX_KEY_LENGTH), primary_key=True),
    Column("route", String(512), nullable=False),
    Column("fingerprint", String(64), nullable=False),
    Column("status", Integer),  # None while the first request runs
    Column("content_type", String(128)),
    Column("body", LargeBinary),
    Column("created_at", DateTime(timezone=True), nullable=False, index=True),
)


class IdempotencyStore:
    def __init__(self, db: Database) -> None:
        self.db = db
        # Keys whose first request runs in this process: duplicates wait on these.
        self.running: dict[tuple[str, str], asyncio.Event] = {}

    async def claim(self, scope: str, key: str, route: str) -> Any | None:
        """None when this request is the first (the key is now held); else the row. The
        body's fingerprint is kept with the answer (`keep`): it is known once the body has
        streamed by."""
        row = {
            "scope": scope,
            "key": key,
            "route": route,
            "fingerprint": "",
            "created_at": utcnow(),
        }
        try:
            async with self.db.transaction() as conn:
                await conn.execute(idempotency_table.insert().values(**row))
            return None
        except IntegrityError:
            found = await self.get(scope, key)
            if found is not None and _expired(found):
                await self.release(scope, key)
                return await self.claim(scope, key, route)
            return found

    async def get(self, scope: str, key: str) -> Any | None:
        t = idempotency_table.c
        async with self.db.engine.connect() as conn:
            query = select(idempotency_table).where(and_(t.scope == scope, t.key == key))
            return (await conn.execute(query)).first()

    async def keep(
        self, scope: str, key: str, status: int, content_type: str, body: bytes, fingerprint: str
    ) -> None:
        t = idempotency_table.c
        async with self.db.transaction() as conn:
            await conn.execute(
                idempotency_table.update()
                .where(and_(t.scope == scope, t.key == key))
                .values(
                    status=status, content_type=content_type, body=body, fingerprint=fingerprint
                )
            )

    async def release(self, scope: str, key: str) -> None:
        t = idempotency_table.c
        async with self.db.transaction() as conn:
            await conn.execute(
                delete(idempotency_table).where(and_(t.scope == scope, t.key == key))
            )


def _expired(row: Any) -> bool:
    created: datetime = row.created_at
    if created.tzinfo is None:
        created = created.replace(tzinfo=utcnow().tzinfo)
    age = utcnow() - created
    if row.status is None:
        return age > timedelta(seconds=ABANDONED_S)
    return age > timedelta(seconds=IDEMPOTENCY_TTL_S)
