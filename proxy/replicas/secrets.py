"""Secrets every replica must share: the session-cookie and signed-URL secret, and the webhook
signing secret.

Each is the configured value when there is one (SESSION_SECRET, WEBHOOK_SECRET). Unset, one
process keeps its own in the data folder; replicas on PostgreSQL keep one in the database
instead, so a cookie or a signed URL made by one replica is good on all of them and every
callback verifies with one secret. The first replica to ask offers the value of its data folder:
a single proxy that becomes a replica keeps its cookies valid and its receivers verifying.
"""

from __future__ import annotations

from sqlalchemy import Column, DateTime, String, Table, Text, func, select
from sqlalchemy.dialects.postgresql import insert as pg_insert

from proxy.db import Database, metadata

shared_secrets_table = Table(
    "shared_secrets",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("value", Text, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
)


async def shared_secret(db: Database, name: str, proposed: str) -> str:
    """The secret `name` all replicas use: the one kept in the database, or `proposed`, kept
    now, when there is none yet (PostgreSQL only)."""
    table = shared_secrets_table
    async with db.transaction() as conn:
        await conn.execute(
            pg_insert(table)
            .values(name=name, value=proposed, created_at=func.now())
            .on_conflict_do_nothing(index_elements=[table.c.name])
        )
        value = (await conn.execute(select(table.c.value).where(table.c.name == name))).scalar_one()
    return str(value)
