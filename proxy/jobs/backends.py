"""The pool of ComfyUI backends (one per GPU): client, socket and bookkeeping for each."""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

from proxy.comfy import BackendSocket, ComfyClient, SocketState
from proxy.settings import Settings

log = logging.getLogger("proxy.backends")


@dataclass
class Backend:
    name: str  # its base URL
    index: int  # stable position in the pool: the seed-004 `gpu_id`
    client: ComfyClient
    socket: BackendSocket
    inflight: set[str] = field(default_factory=set)
    jobs_done: int = 0
    last_error: str | None = None
    current_job: str | None = None
    last_workflow: str | None = None
    # After a failed submit the backend rests a moment instead of being retried in a loop.
    cooldown_until: float = 0.0

    @property
    def up(self) -> bool:
        return self.socket.connected and time.monotonic() >= self.cooldown_until

    def describe(self) -> dict[str, Any]:
        return {
            "url": self.name,
            "gpu_id": self.index,
            "status": "up" if self.up else "down",
            "websocket": self.socket.state.value,
            "current_job": self.current_job,
            "queue_length": len(self.inflight),
            "comfy_queue_remaining": self.socket.queue_remaining,
            "jobs_done": self.jobs_done,
            "last_error": self.last_error or self.socket.last_error,
        }


class BackendPool:
    def __init__(self, backends: list[Backend]) -> None:
        self.backends = backends

    @classmethod
    def build(
        cls,
        settings: Settings,
        http: httpx.AsyncClient,
        client_id: str,
        on_state: Callable[[Backend, SocketState], Awaitable[None]],
    ) -> BackendPool:
        backends: list[Backend] = []
        for index, url in enumerate(settings.comfyui_urls):
            holder: dict[str, Backend] = {}

            async def notify(state: SocketState, _holder: dict[str, Backend] = holder) -> None:
                await on_state(_holder["backend"], state)

            socket = BackendSocket(
                url,
                client_id,
                heartbeat_s=settings.ws_heartbeat_s,
                reconnect_min_s=settings.ws_reconnect_min_s,
                reconnect_max_s=settings.ws_reconnect_max_s,
                on_status=notify,
            )
            backend = Backend(name=url, index=index, client=ComfyClient(url, http), socket=socket)
            holder["backend"] = backend
            backends.append(backend)
        return cls(backends)

    def get(self, name: str | None) -> Backend | None:
        return next((b for b in self.backends if b.name == name), None)

    def up(self) -> list[Backend]:
        return [b for b in self.backends if b.up]

    def start(self) -> None:
        for backend in self.backends:
            backend.socket.start()

    async def close(self) -> None:
        for backend in self.backends:
            await backend.socket.close()
