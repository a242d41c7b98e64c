"""Shared set-up for the benchmarks: a stand-in and a proxy on loopback ports."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx

from proxy.settings import Settings
from proxy.testing import ProxyServer, proxy_server

SMALL = {"width": 128, "height": 128, "length": 17, "steps": 8, "fps": 16}


@asynccontextmanager
async def proxy_for(urls: list[str], data_dir: Path, **kw: object) -> AsyncIterator[ProxyServer]:
    async with proxy_server(Settings(data_dir=data_dir, comfyui_urls=urls, **kw)) as server:
        yield server


async def run_jobs(client: httpx.AsyncClient, count: int, prefix: str) -> float:
    """Submit `count` jobs at once; seconds until the last one has completed."""
    start = time.perf_counter()
    ids = []
    for i in range(count):
        body = {"prompt": f"{prefix} {i}", "seed": i, **SMALL}
        ids.append((await client.post("/generate", json=body)).json()["job_id"])
    pending = set(ids)
    async with asyncio.timeout(600):
        async with client.stream("GET", "/api/events") as stream:
            async for line in stream.aiter_lines():
                if line.startswith("data: "):
                    job = json.loads(line[6:])["job"]
                    if job["status"] == "completed":
                        pending.discard(job["id"])
                    elif job["status"] == "failed":
                        raise RuntimeError(job["error"])
                    if not pending:
                        break
    return time.perf_counter() - start
