"""Fixtures shared by every test layer."""

from __future__ import annotations

import asyncio
import socket
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
REFERENCE_DIR = REPO_ROOT.parent / "shared" / "comfyui-reference"
POSTGRES_URL = "postgresql+asyncpg://postgres@127.0.0.1:5432/test"


def _postgres_answers() -> bool:
    try:
        with socket.create_connection(("127.0.0.1", 5432), timeout=2):
            return True
    except OSError:
        return False


@pytest.fixture(params=["sqlite", "postgres"])
async def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    """A fresh database: SQLite in tmp_path, or a fresh schema in the local PostgreSQL."""
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'test.db'}"
        return
    async with fresh_postgres_schema() as url:
        yield url


@pytest.fixture
async def postgres_url() -> AsyncIterator[str]:
    """A fresh schema in the local PostgreSQL (what replicas share); skipped without one."""
    async with fresh_postgres_schema() as url:
        yield url


@asynccontextmanager
async def fresh_postgres_schema() -> AsyncIterator[str]:
    if not _postgres_answers():
        pytest.skip("no PostgreSQL answers on 127.0.0.1:5432")
    import asyncpg

    schema = f"t_{uuid.uuid4().hex[:12]}"
    conn = await asyncio.wait_for(asyncpg.connect("postgresql://postgres@127.0.0.1:5432/test"), 5)
    try:
        await conn.execute(f'CREATE SCHEMA "{schema}"')
        yield f"{POSTGRES_URL}?schema={schema}"
    finally:
        await conn.execute(f'DROP SCHEMA "{schema}" CASCADE')
        await conn.close()


@pytest.fixture
def moto_s3() -> Iterator[Any]:
    """moto's S3 server on a loopback port (`MotoS3`, tests/media/test_s3_store.py), stopped
    after; the test is skipped where moto is not installed."""
    from tests.media.test_s3_store import moto_running

    with moto_running() as moto:
        yield moto
