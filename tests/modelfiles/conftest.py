"""Fixtures: a loopback file server, small random model files, databases, managers."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from proxy.db import Database, metadata
from proxy.modelfiles.downloads import DownloadManager
from proxy.modelfiles.manifest import Manifest
from proxy.modelfiles.store import model_downloads
from proxy.settings import Settings

from .fileserver import FileServer
from .helpers import HF_TOKEN


@pytest.fixture(autouse=True)
def _hf_env(monkeypatch: pytest.MonkeyPatch) -> None:
    # get_token() reads HF_TOKEN first; nothing reaches a token file or the network.
    monkeypatch.setenv("HF_TOKEN", HF_TOKEN)
    monkeypatch.delenv("HF_OIDC_RESOURCE", raising=False)
    monkeypatch.delenv("HUGGING_FACE_HUB_TOKEN", raising=False)


@pytest.fixture
async def server() -> AsyncIterator[FileServer]:
    srv = FileServer()
    await srv.start()
    try:
        yield srv
    finally:
        await srv.stop()


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(trust_env=False, timeout=10.0) as client:
        yield client


@pytest.fixture
def settings(tmp_path: Path, server: FileServer) -> Settings:
    return Settings(
        data_dir=tmp_path / "data", models_dir=tmp_path / "models", hf_endpoint=server.url
    )


DatabaseFactory = Callable[[], Awaitable[Database]]


@pytest.fixture
async def open_database(database_url: str) -> AsyncIterator[DatabaseFactory]:
    """A factory of `Database` objects on one fresh store (a new one simulates a restart).

    `database_url` (tests/conftest.py) gives SQLite, then PostgreSQL in a schema of its own.
    """
    opened: list[Database] = []

    async def factory() -> Database:
        db = Database(database_url)
        opened.append(db)
        return db

    setup = await factory()
    async with setup.transaction() as conn:
        await conn.run_sync(metadata.create_all, tables=[model_downloads])
    try:
        yield factory
    finally:
        for db in opened:
            await db.close()


@pytest.fixture
async def database(open_database: DatabaseFactory) -> Database:
    return await open_database()


ManagerFactory = Callable[..., Awaitable[DownloadManager]]


@pytest.fixture
async def make_manager(
    database: Database, settings: Settings, http: httpx.AsyncClient
) -> AsyncIterator[ManagerFactory]:
    """Started managers with quick retries and frequent progress; closed at teardown."""
    managers: list[DownloadManager] = []

    async def factory(manifest: Manifest, **kw: Any) -> DownloadManager:
        kw.setdefault("database", database)
        kw.setdefault("settings", settings)
        kw.setdefault("progress_interval_s", 0.05)
        kw.setdefault("retry_delays_s", (0.01, 0.01, 0.01))
        manager = DownloadManager(
            kw.pop("database"), kw.pop("settings"), http, manifest=manifest, **kw
        )
        await manager.start()
        managers.append(manager)
        return manager

    try:
        yield factory
    finally:
        for manager in managers:
            await manager.close()
