"""The database: SQLAlchemy Core on an async engine.

SQLite (one file in the data dir, WAL) by default; PostgreSQL when `DATABASE_URL` says
`postgresql+asyncpg://...`, so several proxies can share one queue. Every table lives on the
one `metadata` below; modules that own a table declare it next to their store, and every
change to one comes with a revision in `proxy.migrations`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from sqlalchemy import JSON, MetaData, event, make_url
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

metadata = MetaData()

# JSON everywhere, JSONB on PostgreSQL.
JSONType = JSON().with_variant(JSONB(), "postgresql")


class Database:
    """Owns the engine; created and closed by the app lifespan."""

    def __init__(self, url: str) -> None:
        # `?schema=name` on a PostgreSQL URL keeps our tables in that schema.
        parsed = make_url(url)
        schema = parsed.query.get("schema")
        if schema:
            parsed = parsed.difference_update_query(["schema"])
        self.url = url
        self.schema = str(schema) if schema else None
        self.is_sqlite = parsed.drivername.startswith("sqlite")
        kwargs: dict[str, object] = {}
        if self.is_sqlite:
            kwargs["connect_args"] = {"timeout": 30}
        else:
            kwargs["pool_pre_ping"] = True
        engine = create_async_engine(parsed, **kwargs)
        if schema:
            engine = engine.execution_options(schema_translate_map={None: self.schema})
        self.engine: AsyncEngine = engine
        if self.is_sqlite:
            event.listen(self.engine.sync_engine, "connect", _sqlite_pragmas)

    async def migrate(self) -> None:
        """Bring the schema to the newest revision and check it matches `metadata`; raises
        `proxy.migrations.MigrationError` if it cannot (see that package for how)."""
        # Imported here: the migrations import every store, and every store imports this.
        from proxy.migrations import migrate

        await migrate(self.engine, self.schema)

    # The old name, still used by the lifespan and tests; `metadata.create_all` never altered
    # an existing table, so it now migrates too.
    create_all = migrate

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncConnection]:
        async with self.engine.begin() as conn:
            yield conn

    async def close(self) -> None:
        await self.engine.dispose()


def _sqlite_pragmas(dbapi_conn: object, _record: object) -> None:
    cursor = dbapi_conn.cursor()  # type: ignore[attr-defined]
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()
