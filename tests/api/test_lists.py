"""Every list is a page (`limit`, `offset`, `total`; at most 1000 a time), and a database
whose connections are all in use answers 503 "busy, try again", not a 500."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from proxy.modelfiles.store import DownloadStatus
from proxy.settings import Settings
from tests.launcher.proc import nowhere
from tests.support import proxy_server

LISTS = {
    "/jobs": ("jobs", 100),
    "/api/jobs": ("jobs", 50),
    "/api/batches": ("batches", 50),
    "/api/model-files/downloads": ("downloads", 100),
}


async def _started(url: str) -> None:
    """Wait for the lifespan (the server queues requests until it has run)."""
    async with httpx.AsyncClient(base_url=url, timeout=30) as client:
        assert (await client.get("/health")).status_code == 200


@pytest.mark.parametrize("path", list(LISTS))
async def test_every_list_is_paged_and_bounded(tmp_path, path):
    key, default = LISTS[path]
    settings = Settings(data_dir=tmp_path, comfyui_urls=[nowhere()])
    async with proxy_server(settings) as proxy:
        async with httpx.AsyncClient(base_url=proxy.url, timeout=30) as client:
            page = (await client.get(path)).json()
            assert (page["limit"], page["offset"], page["total"]) == (default, 0, 0)
            assert page[key] == []
            for bad in ({"limit": 1001}, {"limit": 0}, {"offset": -1}):
                assert (await client.get(path, params=bad)).status_code == 422, bad


async def test_downloads_page_through_all_records(tmp_path):
    settings = Settings(data_dir=tmp_path, comfyui_urls=[nowhere()])
    async with proxy_server(settings) as proxy:
        await _started(proxy.url)
        store = proxy.app.state.services.downloads.store  # type: ignore[attr-defined]
        for n in range(5):
            await store.insert(
                model_id="vae" if n % 2 else "model",
                filename=f"f{n}",
                folder="vae",
                target_path=f"/x/f{n}",
                source_url="http://nowhere/",
                status=DownloadStatus.failed.value,
            )
        async with httpx.AsyncClient(base_url=proxy.url, timeout=30) as client:
            seen = []
            for offset in (0, 2, 4):
                page = (
                    await client.get(
                        "/api/model-files/downloads", params={"limit": 2, "offset": offset}
                    )
                ).json()
                assert page["total"] == 5 and len(page["downloads"]) <= 2
                seen += [d["filename"] for d in page["downloads"]]
            assert seen == ["f4", "f3", "f2", "f1", "f0"]  # newest first, each once
            vae = (
                await client.get("/api/model-files/downloads", params={"model_id": "vae"})
            ).json()
            assert vae["total"] == 2 and [d["filename"] for d in vae["downloads"]] == ["f3", "f1"]


async def test_an_exhausted_database_pool_is_a_503_to_retry(tmp_path):
    settings = Settings(
        data_dir=tmp_path,
        comfyui_urls=[nowhere()],
        db_pool_size=1,
        db_max_overflow=0,
        db_pool_timeout_s=0.2,
    )
    async with proxy_server(settings) as proxy:
        await _started(proxy.url)
        engine = proxy.app.state.services.db.engine  # type: ignore[attr-defined]
        async with httpx.AsyncClient(base_url=proxy.url, timeout=30) as client:
            assert (await client.get("/jobs")).status_code == 200
            # Hold the only connection: every request now waits for one, and gives up.
            async with engine.connect():
                busy = await client.get("/jobs")
                status = await client.get("/status/nope")
            assert (await client.get("/jobs")).status_code == 200  # free again
    assert busy.status_code == 503 and status.status_code == 503
    assert busy.headers["retry-after"] == "2"
    body = busy.json()
    assert body["error"].startswith("The proxy's database is busy") and "try again" in body["error"]
    assert body["detail"] == body["error"]  # the proxy's error shape, not plain text
    assert "QueuePool" not in busy.text  # nothing of SQLAlchemy's


async def test_the_pool_serves_many_concurrent_readers(tmp_path):
    """Far more concurrent requests than connections: they queue for one, none fails."""
    settings = Settings(data_dir=tmp_path, comfyui_urls=[nowhere()], db_pool_size=2)
    async with proxy_server(settings) as proxy:
        limits = httpx.Limits(max_connections=200)
        async with httpx.AsyncClient(base_url=proxy.url, timeout=60, limits=limits) as client:
            answers = await asyncio.gather(*(client.get("/jobs") for _ in range(200)))
    assert {a.status_code for a in answers} == {200}
