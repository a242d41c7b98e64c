"""The database: SQLAlchemy Core on an async engine.

SQLite (one file in the data dir, WAL) by default; PostgreSQL when `DATABASE_URL` says
`postgresql+asyncpg://...`; one proxy process per database (`proxy.instance` sees to it).
Every table lives on the one `metadata` below; modules that own a table declare it next to
their store, and every change to one comes with a revision in `proxy.migrations`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from sqlalchemy import JSON, MetaData, event, make_url
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.pool import AsyncAdaptedQueuePool

metadata = MetaData()

# JSON everywhere, JSONB on PostgreSQL.
JSONType = JSON().with_variant(JSONB(), "postgresql")


class Database:
    """Owns the engine; created and closed by the app lifespan."""

    def __init__(
        self,
        url: str,
        *,
        pool_size: int = 10,
        max_overflow: int = 20,
        pool_timeout_s: float = 30.0,
    ) -> None:
        # `?schema=name` on a PostgreSQL URL keeps our tables in that schema.
        parsed = make_url(url)
        schema = parsed.query.get("schema")
        if schema:
            parsed = parsed.difference_update_query(["schema"])
        self.url = url
        self.schema = str(schema) if schema else None
        self.is_sqlite = parsed.drivername.startswith("sqlite")
        # SQLAlchemy's own default (5 + 10) makes the 16th concurrent request wait; every
        # request holds a connection only for its query, so a few dozen serve hundreds of
        # pollers. A request that waits `pool_timeout_s` for one raises
        # `sqlalchemy.exc.TimeoutError`, which the API answers with 503 "busy, try again".
        kwargs: dict[str, object] = {
            "pool_size": pool_size,
            "max_overflow": max_overflow,
            "pool_timeout": pool_timeout_s,
        }
        if self.is_sqlite:
            kwargs["connect_args"] = {"timeout": 30}
            if parsed.database in (None, "", ":memory:"):
                # An in-memory database lives in one connection (SQLAlchemy's StaticPool),
                # which takes no limits.
                kwargs = {"connect_args": {"timeout": 30}}
            else:
                # What SQLAlchemy picks for aiosqlite files anyway (a queue of connections,
                # each with its own thread), named so the limits above surely apply.
                kwargs["poolclass"] = AsyncAdaptedQueuePool
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
