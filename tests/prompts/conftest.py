from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import text

from proxy.api.auth import authenticate
from proxy.api.deps import get_prompt_tools, get_scene_saver
from proxy.api.errors import install_error_handlers
from proxy.api.prompts import router
from proxy.auth import ANONYMOUS
from proxy.db import Database
from proxy.prompts.llm import LLMClient
from proxy.prompts.service import PromptTools
from proxy.prompts.store import PromptSessionStore, prompt_sessions
from proxy.settings import Settings

from .fake_llm import FakeLLM

POSTGRES_URL = os.environ.get(
    "TEST_POSTGRES_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/test"
)
MODEL = "test-model"
API_KEY = "sk-test-123"


@pytest.fixture
async def fake_llm() -> AsyncIterator[FakeLLM]:
    server = FakeLLM()
    await server.start()
    yield server
    await server.close()


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient() as client:
        yield client


@pytest.fixture
def make_llm(fake_llm: FakeLLM, http: httpx.AsyncClient) -> Callable[..., LLMClient]:
    def make(**overrides: Any) -> LLMClient:
        options: dict[str, Any] = {
            "base_url": fake_llm.base_url,
            "model": MODEL,
            "api_key": API_KEY,
            "timeout_s": 5.0,
            "max_concurrency": 4,
        }
        options.update(overrides)
        return LLMClient(http, **options)

    return make


@pytest.fixture
async def sqlite_db(tmp_path: Path) -> AsyncIterator[Database]:
    db = Database(f"sqlite+aiosqlite:///{tmp_path / 'prompts.db'}")
    await PromptSessionStore(db).create_table()
    yield db
    await db.close()


@pytest.fixture(scope="session")
def postgres_problem() -> str | None:
    """Why PostgreSQL can't be used (probed once per run, 2 s at most), or None."""

    async def probe() -> None:
        db = Database(POSTGRES_URL)
        try:
            await asyncio.wait_for(PromptSessionStore(db).create_table(), timeout=2)
        finally:
            await db.close()

    try:
        asyncio.run(probe())
    except Exception as exc:  # refused, timed out, no such database: all mean "not here"
        return f"PostgreSQL at {POSTGRES_URL} is not usable (2 s limit): {exc!r}"
    return None


@pytest.fixture
async def postgres_db(postgres_problem: str | None) -> AsyncIterator[Database]:
    if postgres_problem:
        pytest.skip(postgres_problem)
    db = Database(POSTGRES_URL)
    yield db
    await db.close()


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def db(request: pytest.FixtureRequest) -> Database:
    """The store's database, once on SQLite and once on PostgreSQL."""
    fixture = "sqlite_db" if request.param == "sqlite" else "postgres_db"
    return request.getfixturevalue(fixture)


@pytest.fixture
async def session_ids(db: Database) -> AsyncIterator[Callable[[str], str]]:
    """Session ids unique to this test (the PostgreSQL database is shared); rows are removed."""
    prefix = f"t{uuid.uuid4().hex[:12]}"

    def make(name: str) -> str:
        return f"{prefix}-{name}"

    yield make
    async with db.transaction() as conn:
        await conn.execute(prompt_sessions.delete().where(prompt_sessions.c.id.like(f"{prefix}-%")))


def build_app(
    tools: PromptTools, save_scene_session: Callable[[list[dict]], Awaitable[str]] | None = None
) -> FastAPI:
    async def not_stored(_scenes: list[dict]) -> None:
        return None

    app = FastAPI()

    app.dependency_overrides[authenticate] = lambda: ANONYMOUS  # an open proxy
    install_error_handlers(app)
    app.include_router(router)
    app.dependency_overrides[get_prompt_tools] = lambda: tools
    app.dependency_overrides[get_scene_saver] = lambda: save_scene_session or not_stored
    return app


def api_client(app: FastAPI, **kwargs: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://testserver", **kwargs
    )


@pytest.fixture
def settings(fake_llm: FakeLLM, tmp_path: Path) -> Settings:
    return Settings(
        data_dir=tmp_path,
        llm_base_url=fake_llm.base_url,
        llm_model=MODEL,
        llm_api_key=API_KEY,
        llm_timeout_s=5.0,
        llm_max_concurrency=4,
    )


@pytest.fixture
def tools(settings: Settings, http: httpx.AsyncClient, sqlite_db: Database) -> PromptTools:
    return PromptTools.from_settings(settings, http=http, db=sqlite_db)


@pytest.fixture
async def client(tools: PromptTools) -> AsyncIterator[httpx.AsyncClient]:
    async with api_client(build_app(tools)) as c:
        yield c


async def count_rows(db: Database) -> int:
    async with db.engine.connect() as conn:
        return (await conn.execute(text("SELECT count(*) FROM prompt_sessions"))).scalar_one()
