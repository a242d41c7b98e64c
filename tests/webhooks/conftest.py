"""Webhook tests: a loopback receiver that records every callback and answers as told, the
stand-in ComfyUI for real jobs, and the proxy's settings with fast retries."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiohttp import web
from standardwebhooks import Webhook

from proxy.settings import Settings
from tests.support import StandinProcess, bound_socket, follow_job, standin_process

WAIT_S = 30.0
SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
# A job of a few sampler steps at the smallest size.
SMALL = {"width": 64, "height": 64, "num_frames": 9, "num_inference_steps": 4}


@dataclass(frozen=True)
class Reply:
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    at: float  # monotonic

    @property
    def id(self) -> str:
        return self.headers["webhook-id"]

    def verified(self, secret: str) -> Any:
        """The payload, once the Standard Webhooks verifier accepts the signature."""
        return Webhook(secret).verify(self.body, self.headers)

    @property
    def payload(self) -> Any:
        return json.loads(self.body)


class Receiver:
    """A callback receiver on a free loopback port: answers each POST with the next planned
    reply (then `default`), and records every request."""

    def __init__(self) -> None:
        self.received: list[Received] = []
        self.plan: list[Reply] = []
        self.default = Reply(200)
        self._changed = asyncio.Condition()
        self._runner: web.AppRunner | None = None
        self.url = ""

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        sock = bound_socket()
        site = web.SockSite(self._runner, sock)
        await site.start()
        self.url = f"http://127.0.0.1:{sock.getsockname()[1]}"

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        async with self._changed:
            self.received.append(
                Received(request.path, dict(request.headers), body, time.monotonic())
            )
            self._changed.notify_all()
        reply = self.plan.pop(0) if self.plan else self.default
        return web.Response(status=reply.status, headers=reply.headers)

    async def wait_for(
        self, count: int, match: Callable[[Received], bool] = lambda r: True
    ) -> list[Received]:
        """The first `count` requests that `match`, once they have arrived."""
        async with asyncio.timeout(WAIT_S):
            async with self._changed:
                await self._changed.wait_for(
                    lambda: len([r for r in self.received if match(r)]) >= count
                )
        return [r for r in self.received if match(r)][:count]

    def of_type(self, event: str) -> list[Received]:
        return [r for r in self.received if r.payload["type"] == event]


@asynccontextmanager
async def serving() -> AsyncIterator[Receiver]:
    server = Receiver()
    await server.start()
    try:
        yield server
    finally:
        await server.close()


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    async with serving() as server:
        yield server


@pytest.fixture
async def other_receiver() -> AsyncIterator[Receiver]:
    """A second receiver (a redirect's destination, a target besides WEBHOOK_URL)."""
    async with serving() as server:
        yield server


@pytest.fixture
def standin(tmp_path: Path) -> Iterator[StandinProcess]:
    with standin_process(tmp_path / "comfy", step_seconds=0.05) as proc:
        yield proc


@pytest.fixture
def make_settings(tmp_path: Path, standin: StandinProcess) -> Callable[..., Settings]:
    """The proxy's settings in front of the stand-in, with retries in tens of milliseconds."""

    def make(**kw: object) -> Settings:
        defaults: dict[str, object] = {
            "data_dir": tmp_path / "data",
            "comfyui_urls": [standin.url],
            "ws_reconnect_max_s": 0.5,
            "webhook_retry_min_s": 0.05,
            "webhook_retry_max_s": 0.2,
            "webhook_timeout_s": 5.0,
        }
        return Settings(**{**defaults, **kw})

    return make


async def run_job(client: httpx.AsyncClient, prompt: str = "a callback", **params: Any) -> str:
    """Create a job and follow it to its end; its id."""
    response = await client.post("/api/jobs", json={"prompt": prompt, **SMALL, **params})
    assert response.is_success, response.text
    job_id = str(response.json()["id"])
    job, _ = await follow_job(client, job_id, {"completed", "failed", "stopped"}, WAIT_S)
    assert job["status"] == "completed", job
    return job_id


async def deliveries(client: httpx.AsyncClient, job_id: str) -> list[dict[str, Any]]:
    response = await client.get(f"/api/jobs/{job_id}/webhooks")
    assert response.status_code == 200, response.text
    rows: list[dict[str, Any]] = response.json()["deliveries"]
    return rows
