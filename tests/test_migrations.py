"""Schema migrations at start (`Database.migrate()`), on SQLite and on PostgreSQL in a schema
of its own (`database_url`; skipped where no PostgreSQL answers).

A "pre-migration" database is what `metadata.create_all` made before Alembic: the baseline's
tables and no `alembic_version`. The tests make one by running the baseline revision alone and
dropping `alembic_version`, which is the baseline's DDL exactly.
"""

from __future__ import annotations

import ast
import asyncio
import re
import uuid
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from sqlalchemy import Column, Connection, MetaData, String, Table, insert, inspect, select

import proxy.migrations as migrations
from proxy.batches.store import Batch, BatchStore, batches_table, utcnow
from proxy.db import Database, metadata
from proxy.jobs.models import Job, JobStatus
from proxy.jobs.store import JobStore
from proxy.migrations import BASELINE, MigrationError, config, lock_and_scope
from proxy.migrations.__main__ import draft_revision, next_revision_id
from proxy.modelfiles.store import model_downloads

HEAD = "0007_replicas"
TABLES = {
    "jobs",
    "batches",
    "scene_sessions",
    "prompt_sessions",
    "model_downloads",
    "uploads",
    "node_timings",
    "webhook_targets",
    "webhook_deliveries",
    "idempotency_keys",
    "replicas",
    "backend_leases",
    "shared_secrets",
}
PROXY_DIR = Path(migrations.__file__).resolve().parent.parent

# Outside `metadata`: reads whichever revision a database is at.
_version_table = Table("alembic_version", MetaData(), Column("version_num", String(32)))


async def version(db: Database) -> str | None:
    async with db.engine.connect() as conn:
        return (await conn.execute(select(_version_table.c.version_num))).scalar_one_or_none()


async def schema_of(db: Database) -> dict[str, Any]:
    """Tables, their columns and their indexes, as the database reports them."""

    def read(conn: Connection) -> dict[str, Any]:
        inspector = inspect(conn)
        return {
            table: (
                [column["name"] for column in inspector.get_columns(table, schema=db.schema)],
                sorted(
                    (index["name"], tuple(index["column_names"]), bool(index["unique"]))
                    for index in inspector.get_indexes(table, schema=db.schema)
                ),
            )
            for table in inspector.get_table_names(schema=db.schema)
        }

    async with db.engine.connect() as conn:
        return await conn.run_sync(read)


async def differences(db: Database) -> list[str]:
    def compare(conn: Connection) -> list[str]:
        lock_and_scope(conn, db.schema)  # the comparison reflects the search_path's schema
        return migrations.schema_differences(conn)

    async with db.engine.begin() as conn:
        return await conn.run_sync(compare)


async def make_pre_migration_database(db: Database) -> None:
    def baseline_only(conn: Connection) -> None:
        lock_and_scope(conn, db.schema)
        command.upgrade(config(conn), BASELINE)
        _version_table.drop(conn)

    async with db.engine.begin() as conn:
        await conn.run_sync(baseline_only)


def make_job() -> Job:
    now = utcnow()
    return Job(
        id=str(uuid.uuid4()),
        workflow="fastwan_t2v",
        status=JobStatus.QUEUED,
        params={"prompt": "a cat", "seed": 7},
        created_at=now,
        updated_at=now,
    )


def make_batch(**kw: Any) -> Batch:
    now = utcnow()
    return Batch(
        id=str(uuid.uuid4()),
        kind="portal",
        surface="portal",
        workflow="fastwan_t2v",
        params={"steps": 4},
        created_at=now,
        updated_at=now,
        **kw,
    )


class ExtraTable:
    """A table declared on `metadata` for one test only (a Table with no revision)."""

    def __enter__(self) -> Table:
        self.table = Table("zz_unmigrated", metadata, Column("id", String(8), primary_key=True))
        return self.table

    def __exit__(self, *exc: object) -> None:
        metadata.remove(self.table)


async def test_a_fresh_database_is_made_by_the_migrations(database_url: str) -> None:
    db = Database(database_url)
    try:
        assert await schema_of(db) == {}
        await db.migrate()
        schema = await schema_of(db)
        # On PostgreSQL these are read from the `?schema=` schema itself, alembic_version too.
        assert set(schema) == TABLES | {"alembic_version"}
        assert await version(db) == HEAD
        assert await differences(db) == []
        assert ("ix_batches_client_key", ("client_key",), False) in schema["batches"][1]
        if not db.is_sqlite:
            missing = Database(database_url.replace("?schema=", "?schema=missing_"))
            try:
                with pytest.raises(MigrationError, match=r"schema 'missing_t_\w+'.*does not exist"):
                    await missing.migrate()
            finally:
                await missing.close()
    finally:
        await db.close()


async def test_a_pre_migration_database_keeps_its_rows_and_gains_the_new_columns(
    database_url: str,
) -> None:
    db = Database(database_url)
    try:
        await make_pre_migration_database(db)
        before = await schema_of(db)
        assert "alembic_version" not in before and "uploads" not in before
        assert "client_key" not in before["batches"][0]
        job = make_job()
        await JobStore(db).insert(job)  # `jobs` is the same in both revisions
        batch = make_batch()
        row = batch.model_dump(mode="json", exclude={"client_key"})
        row["created_at"], row["updated_at"] = batch.created_at, batch.updated_at
        async with db.transaction() as conn:
            # The old columns only (the store's insert would name `client_key`).
            await conn.execute(insert(batches_table).values(**row))

        await db.migrate()
        assert await version(db) == HEAD
        after = await schema_of(db)
        assert set(after) == TABLES | {"alembic_version"}
        assert await differences(db) == []
        assert await JobStore(db).get(job.id) == job
        store = BatchStore(db)
        got = await store.get_batch(batch.id)
        assert got is not None and got.client_key is None
        assert got.model_dump(exclude={"updated_at"}) == batch.model_dump(exclude={"updated_at"})
        for table in ("batches", "scene_sessions"):
            columns, indexes = after[table]
            assert columns[: len(before[table][0])] == before[table][0]  # added at the end
            assert "client_key" in columns
            assert (f"ix_{table}_client_key", ("client_key",), False) in indexes
        owned = make_batch(client_key="alice")
        await store.insert_batch(owned)
        assert [b.id for b in await store.list_batches(client_key="alice")] == [owned.id]
    finally:
        await db.close()


async def test_a_database_created_by_todays_tables_is_stamped_at_head(database_url: str) -> None:
    # `create_all` from the code between the baseline and this package: already at head.
    db = Database(database_url)
    try:
        async with db.transaction() as conn:
            await conn.run_sync(metadata.create_all)
        batch = make_batch(client_key="bob")
        await BatchStore(db).insert_batch(batch)
        await db.migrate()
        assert await version(db) == HEAD
        assert await BatchStore(db).get_batch(batch.id) == batch
    finally:
        await db.close()


async def test_migrating_twice_is_a_no_op(database_url: str) -> None:
    db = Database(database_url)
    try:
        await db.migrate()
        job = make_job()
        await JobStore(db).insert(job)
        schema = await schema_of(db)
        await db.migrate()
        await db.migrate()  # and again, as every start does
        assert await schema_of(db) == schema
        assert await version(db) == HEAD
        assert await JobStore(db).get(job.id) == job
    finally:
        await db.close()
    restarted = Database(database_url)
    try:
        await restarted.migrate()
        assert await JobStore(restarted).get(job.id) == job
    finally:
        await restarted.close()


async def test_a_migration_waits_for_the_one_holding_the_database(database_url: str) -> None:
    # Proxies in other processes: the lock taken first thing in the transaction (an advisory
    # lock on PostgreSQL, the write lock on SQLite) orders them.
    holder, starting = Database(database_url), Database(database_url)
    try:
        async with holder.engine.begin() as conn:
            await conn.run_sync(lock_and_scope, holder.schema)
            migration = asyncio.create_task(starting.migrate())
            await asyncio.sleep(0.3)
            assert not migration.done()
        await asyncio.wait_for(migration, 10)
        assert await version(starting) == HEAD
    finally:
        await holder.close()
        await starting.close()


async def test_two_databases_in_one_process_migrate_at_once(tmp_path: Path) -> None:
    databases = [Database(f"sqlite+aiosqlite:///{tmp_path / f'{n}.db'}") for n in range(3)]
    try:
        await asyncio.wait_for(asyncio.gather(*(db.migrate() for db in databases)), 20)
        assert [await version(db) for db in databases] == [HEAD] * 3
    finally:
        for db in databases:
            await db.close()


async def test_a_table_without_a_revision_fails_the_start_and_changes_nothing(
    database_url: str,
) -> None:
    db = Database(database_url)
    try:
        with ExtraTable(), pytest.raises(MigrationError) as failure:
            await db.migrate()
        assert "add_table zz_unmigrated" in str(failure.value)
        assert "without a revision" in str(failure.value)
        # One transaction, DDL included: the failed start left the database empty.
        assert await schema_of(db) == {}
        await db.migrate()
        assert await version(db) == HEAD
    finally:
        await db.close()


async def test_a_schema_changed_behind_the_migrations_is_named(tmp_path: Path) -> None:
    db = Database(f"sqlite+aiosqlite:///{tmp_path / 'proxy.db'}")
    try:
        await db.migrate()
        async with db.transaction() as conn:
            await conn.exec_driver_sql("DROP INDEX ix_uploads_client_key")
        with pytest.raises(MigrationError, match=r"add_index ix_uploads_client_key on uploads"):
            await db.migrate()
    finally:
        await db.close()


async def test_a_database_with_only_some_baseline_tables_gets_the_others(
    database_url: str,
) -> None:
    # As one store's own test set-up leaves it (or a proxy from before a store existed).
    db = Database(database_url)
    try:
        async with db.transaction() as conn:
            await conn.run_sync(metadata.create_all, tables=[model_downloads])
        kept = await schema_of(db)
        await db.migrate()
        schema = await schema_of(db)
        assert set(schema) == TABLES | {"alembic_version"}
        assert schema["model_downloads"] == kept["model_downloads"]
        assert await version(db) == HEAD
    finally:
        await db.close()


async def test_a_database_from_a_newer_proxy_is_refused(tmp_path: Path) -> None:
    db = Database(f"sqlite+aiosqlite:///{tmp_path / 'proxy.db'}")
    try:
        await db.migrate()
        async with db.transaction() as conn:
            await conn.execute(_version_table.update().values(version_num="0099_from_the_future"))
        with pytest.raises(MigrationError, match=r"0099_from_the_future, which this version"):
            await db.migrate()
    finally:
        await db.close()


def test_every_module_with_a_table_is_imported_before_the_check() -> None:
    declaring = set()
    for path in PROXY_DIR.rglob("*.py"):
        if "migrations" in path.parts:
            continue  # revisions declare tables of their own, on no shared metadata
        for node in ast.walk(ast.parse(path.read_text())):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Name)
                and node.func.id == "Table"
            ):
                module = path.relative_to(PROXY_DIR.parent).with_suffix("")
                declaring.add(".".join(module.parts))
    assert declaring == set(migrations.TABLE_MODULES)
    assert set(metadata.tables) == TABLES


async def test_the_revision_tool_drafts_what_metadata_adds(tmp_path: Path) -> None:
    assert await draft_revision("nothing", into=tmp_path) is None
    assert next_revision_id(HEAD, "Add: a probe table!") == "0008_add_a_probe_table"
    assert len(next_revision_id(HEAD, "x" * 80)) == 32
    with ExtraTable():
        path = await draft_revision("add a probe table", into=tmp_path)
    assert path is not None and path.parent == tmp_path
    assert path.name == "0008_add_a_probe_table.py"
    source = path.read_text()
    assert re.search(r"op\.create_table\(\s*'zz_unmigrated'", source)
    assert "down_revision: str | None = '0007_replicas'" in source
