"""One proxy per data dir: a second `python -m proxy` on the same one refuses to start, naming
the process that holds it, and starts nothing (not even the stand-in). Proxies with their own
data dirs on one PostgreSQL are replicas: both start and serve."""

from __future__ import annotations

import asyncio
import os
import re
import uuid

import httpx
import pytest

from proxy.instance import AlreadyServing, file_lock
from tests.conftest import POSTGRES_URL, _postgres_answers

from .proc import nowhere, proxy_env, running_proxy

# A refused start is immediate; this only bounds a hang.
REFUSAL_TIMEOUT_S = 30


def _pid_named(text: str, pid: int) -> bool:
    return re.search(rf"\bpid {pid}\b", text) is not None


async def test_a_second_proxy_on_the_same_data_dir_refuses_naming_the_first(tmp_path):
    data = tmp_path / "data"
    async with running_proxy("serve", proxy_env(data, COMFYUI_URL=nowhere())) as first:
        await first.wait_ready()
        # `serve` and `up` alike; `up` with nothing configured would start the stand-in.
        for command, extra in (("serve", {"COMFYUI_URL": nowhere()}), ("up", {})):
            env = proxy_env(data, COMFYUI_PROBE_URL=nowhere(), **extra)
            async with running_proxy(command, env) as second:
                code = await second.finish(REFUSAL_TIMEOUT_S)
            assert code != 0, second.text
            assert _pid_named(second.text, first.process.pid), second.text
            assert "already serving" in second.text and "started" in second.text
            assert "STAND-IN" not in second.text and "Traceback" not in second.text
        assert first.process.returncode is None  # the first one serves on, untouched

    # Once the first has stopped, the data dir is free again.
    async with running_proxy("serve", proxy_env(data, COMFYUI_URL=nowhere())) as again:
        await again.wait_ready()


def test_the_file_lock_is_exclusive_and_released(tmp_path):
    lock = tmp_path / "proxy.lock"
    with file_lock(lock, "here"):
        # flock belongs to the open file, so even this process cannot take it twice.
        with pytest.raises(AlreadyServing, match=rf"pid {os.getpid()}\b"):
            with file_lock(lock, "here"):
                pass
    with file_lock(lock, "here"):
        pass


@pytest.fixture
async def pg_schemas():
    """Fresh schemas in the local PostgreSQL, as many as asked for (as the `database_url`
    fixture makes one), dropped afterwards."""
    if not _postgres_answers():
        pytest.skip("no PostgreSQL answers on 127.0.0.1:5432")
    import asyncpg

    conn = await asyncio.wait_for(asyncpg.connect("postgresql://postgres@127.0.0.1:5432/test"), 5)
    made: list[str] = []

    async def fresh() -> str:
        schema = f"t_{uuid.uuid4().hex[:12]}"
        await conn.execute(f'CREATE SCHEMA "{schema}"')
        made.append(schema)
        return f"{POSTGRES_URL}?schema={schema}"

    try:
        yield fresh
    finally:
        for schema in made:
            await conn.execute(f'DROP SCHEMA "{schema}" CASCADE')
        await conn.close()


async def test_two_proxies_on_one_postgres_schema_are_replicas_and_both_serve(tmp_path, pg_schemas):
    url = await pg_schemas()
    env_a = proxy_env(tmp_path / "a", COMFYUI_URL=nowhere(), DATABASE_URL=url, REPLICA_ID="a")
    env_b = proxy_env(tmp_path / "b", COMFYUI_URL=nowhere(), DATABASE_URL=url, REPLICA_ID="b")
    async with running_proxy("serve", env_a) as first, running_proxy("serve", env_b) as second:
        await first.wait_ready()
        await second.wait_ready()
        async with httpx.AsyncClient(timeout=10) as client:
            for proxy, name in ((first, "a"), (second, "b")):
                health = (await client.get(f"{proxy.url}/health")).json()
                assert health["replica"] == name
            replicas = (await client.get(f"{first.url}/api/replicas")).json()["replicas"]
            assert sorted(r["id"] for r in replicas) == ["a", "b"]
        assert "already serving" not in first.text + second.text
