"""The pool of ComfyUI backends (one per GPU): client, socket and bookkeeping for each."""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import httpx

from proxy.comfy import BackendSocket, ComfyClient, SocketState
from proxy.errors import ComfyUnavailable
from proxy.jobs.store import iso_utc
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
    # Replicas (`proxy.replicas.leases`): whether this process drives the backend (always, with
    # one process), who does as last read, whether that one's websocket is connected, until
    # when its lease runs; and whether this process is handing it over (takes no new job).
    mine: bool = True
    owner: str | None = None
    owner_connected: bool = False
    lease_expires_at: datetime | None = None
    draining: bool = False

    @property
    def up(self) -> bool:
        """Whether this process may give it a job now."""
        return (
            self.mine
            and not self.draining
            and self.socket.connected
            and time.monotonic() >= self.cooldown_until
        )

    @property
    def reachable(self) -> bool:
        """Whether some replica (this one or another) has its websocket connected."""
        return self.socket.connected if self.mine else self.owner_connected

    def describe(self) -> dict[str, Any]:
        if self.mine:
            status = "up" if self.up else "down"
            websocket = self.socket.state.value
        else:
            status = "up" if self.owner_connected else "down"
            websocket = "driven by another replica" if self.owner else "not driven"
        return {
            "url": self.name,
            "gpu_id": self.index,
            "status": status,
            "websocket": websocket,
            "owner": self.owner,
            "lease_expires_at": iso_utc(self.lease_expires_at),
            "current_job": self.current_job,
            "queue_length": len(self.inflight),
            "comfy_queue_remaining": self.socket.queue_remaining if self.mine else None,
            "jobs_done": self.jobs_done,
            "last_error": (self.last_error or self.socket.last_error) if self.mine else None,
        }


@dataclass(frozen=True)
class PoolHealth:
    """The pool at a glance, for health answers and admission checks."""

    backends: list[dict[str, Any]]
    up: int  # usable now (by this process or, with replicas, by the one driving it)
    connected: int  # websocket connected here or at the replica driving it

    @property
    def total(self) -> int:
        return len(self.backends)


@dataclass(frozen=True)
class Device:
    """The compute device a backend reports (`/system_stats`)."""

    backend: str
    gpu: bool
    index: int | None
    name: str | None


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

    def connected(self) -> list[Backend]:
        """The backends whose websocket is connected, here or at the replica driving them."""
        return [b for b in self.backends if b.reachable]

    def health(self) -> PoolHealth:
        return PoolHealth(
            backends=[b.describe() for b in self.backends],
            up=len([b for b in self.backends if b.up or (not b.mine and b.owner_connected)]),
            connected=len(self.connected()),
        )

    def require_connected(self) -> None:
        """ComfyUnavailable unless at least one backend's websocket is connected."""
        if not self.connected():
            raise ComfyUnavailable(
                "Model not loaded: no ComfyUI backend is reachable. Try again when it is up."
            )

    def preferred(self) -> Backend:
        """The backend to ask questions of: the first usable one, else the first connected,
        else the first configured (its answer then says why it cannot be reached)."""
        return (self.up() or self.connected() or self.backends)[0]

    async def device(self) -> Device:
        """The first reachable backend's GPU (or CPU), as ComfyUI reports it."""
        self.require_connected()
        backend = (self.up() or self.connected())[0]
        stats = await backend.client.system_stats()
        devices = [d for d in stats.get("devices") or [] if isinstance(d, dict)]
        gpus = [d for d in devices if str(d.get("type", "cpu")).lower() != "cpu"]
        if not gpus:
            return Device(backend=backend.name, gpu=False, index=None, name=None)
        gpu = gpus[0]
        return Device(
            backend=backend.name,
            gpu=True,
            index=int(gpu.get("index") or 0),
            name=str(gpu["name"]) if gpu.get("name") is not None else None,
        )

    async def model_listing(self, folders: list[str]) -> dict[str, list[str]]:
        """The model files ComfyUI itself reports per folder (its GET /models/{folder});
        a folder it lacks counts as empty."""
        backend = self.preferred()
        return {f: (await backend.client.list_models(f)) or [] for f in folders}

    def start(self) -> None:
        """Open the websockets of the backends this process drives (with replicas, the
        lease keeper opens and closes the others' as it gains and loses them)."""
        for backend in self.backends:
            if backend.mine:
                backend.socket.start()

    async def close(self) -> None:
        for backend in self.backends:
            await backend.socket.close()
