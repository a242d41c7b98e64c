"""The stand-in ComfyUI server: state, app factory, websocket route, and start/stop.

Start it in-process with :func:`start_standin` (tests) or from the command line with
``python -m comfyui.standin`` (see ``__main__``). Every ComfyUI route is served at ``/X`` and
``/api/X``; the ``/_standin/...`` control routes (faults, reset) only at their own path.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import logging
import os
import urllib.parse
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import WSMsgType, web

from .executor import Executor
from .faults import Faults, control_routes, http_fault_middleware
from .files import file_routes
from .frontend import (
    PACKAGE_VERSION,
    add_static,
    cache_control_middleware,
    find_web_root,
    frontend_routes,
    internal_routes,
    templates_index,
)
from .hub import Connection, Hub
from .paths import DataDirs, write_placeholder_models
from .promptqueue import PromptQueue
from .routes import core_routes
from .schemas import Schemas
from .timing import get_profile
from .userdata import UserStore, user_routes

log = logging.getLogger(__name__)

BANNER = (
    "\n"
    "  ###################################################################\n"
    "  #  THIS IS THE COMFYUI STAND-IN, NOT COMFYUI.                     #\n"
    "  #  It speaks ComfyUI 0.3.64's HTTP + websocket protocol, loads no #\n"
    "  #  model and produces SYNTHETIC TEST-PATTERN videos.              #\n"
    "  ###################################################################\n"
)

_WORKER_JOIN_S = 5.0


@dataclass(frozen=True)
class StandinConfig:
    """Settings of one stand-in instance."""

    data_dir: Path
    host: str = "127.0.0.1"
    port: int = 0
    step_seconds: float = 0.0
    max_upload_mb: float = 100.0
    # A timing profile's name (``timing.PROFILES``): every node takes a GPU's share of the job,
    # and profiled samplers ignore ``step_seconds``. None: today's timing (step_seconds only).
    profile: str | None = None
    # Divides every profiled duration (20: twenty times faster than the GPU).
    speed: float = 1.0
    # Called with the exit code by the "exit" fault; tests may replace it.
    exit_process: Callable[[int], Any] = os._exit


class StandinServer:
    """Everything one instance holds: folders, schemas, queue, sockets, worker, faults."""

    def __init__(self, config: StandinConfig, loop: asyncio.AbstractEventLoop) -> None:
        profile = get_profile(config.profile, config.speed)  # a bad name fails before any I/O
        self.config = config
        self.dirs = DataDirs(config.data_dir)
        self.dirs.create()
        self.schemas = Schemas(self.dirs)
        self.hub = Hub(loop)
        self.queue = PromptQueue(on_change=self.queue_updated)
        self.faults = Faults()
        self.executor = Executor(
            queue=self.queue,
            hub=self.hub,
            schemas=self.schemas,
            dirs=self.dirs,
            faults=self.faults,
            step_seconds=config.step_seconds,
            exit_process=config.exit_process,
            profile=profile,
        )
        # The /prompt number counter; like ComfyUI it starts at 0 on every (re)start.
        self.number = 0
        self.url = ""
        # The graph editor's files (comfyui-frontend-package), or None when not installed.
        self.web_root = find_web_root()
        # The editor's user folder, <data_dir>/user/default (workflows, settings).
        self.users = UserStore(os.path.join(self.dirs.root, "user"))
        self.users.seed()

    def queue_info(self) -> dict[str, Any]:
        return {"exec_info": {"queue_remaining": self.queue.remaining()}}

    def queue_updated(self) -> None:
        self.hub.send_sync("status", {"status": self.queue_info()})

    def features(self) -> dict[str, Any]:
        return {
            "supports_preview_metadata": True,
            "max_upload_size": float(self.config.max_upload_mb * 1024 * 1024),
        }

    def start(self) -> None:
        self.hub.start()
        self.executor.start()

    async def stop(self) -> None:
        await asyncio.to_thread(self.executor.stop, _WORKER_JOIN_S)
        await self.hub.stop()

    async def restart(self) -> None:
        """Forget queue, history, caches, counter and sockets, as a process restart does."""
        self.queue.restart()
        self.hub.epoch = self.queue.epoch
        self.number = 0
        await asyncio.to_thread(self.dirs.wipe_temp)
        await self.hub.drop_all(mode="abort")

    def state(self) -> dict[str, Any]:
        running, pending = self.queue.current()
        running_id = running[0][1] if running else None
        return {
            "standin": True,
            "url": self.url,
            "data_dir": self.dirs.root,
            "step_seconds": self.executor.step_seconds,
            "profile": self.config.profile,
            "speed": self.config.speed,
            "number": self.number,
            "queue": {
                "running": [item[1] for item in running],
                "pending": [item[1] for item in sorted(pending, key=lambda i: (i[0], i[1]))],
            },
            "history_size": self.queue.history_size(),
            "websockets": list(self.hub.connections),
            "executing": (
                {"prompt_id": running_id, "node": self.executor.last_node_id}
                if running_id is not None
                else None
            ),
            "faults": self.faults.snapshot(),
        }

    # --- websocket -----------------------------------------------------------------------

    async def websocket(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        sid = request.query.get("clientId", "")
        if sid:
            self.hub.connections.pop(sid, None)
        else:
            sid = uuid.uuid4().hex
        self.hub.connections[sid] = Connection(ws, request)
        try:
            await self.hub.send("status", {"status": self.queue_info(), "sid": sid}, sid)
            node_id = self.executor.current_node_for(sid)
            if node_id is not None:
                await self.hub.send("executing", {"node": node_id}, sid)
            first = True
            async for message in ws:
                if message.type != WSMsgType.TEXT:
                    continue
                try:
                    data = json.loads(message.data)
                    if first and isinstance(data, dict) and data.get("type") == "feature_flags":
                        await self.hub.send("feature_flags", self.features(), sid)
                except json.JSONDecodeError:
                    log.debug("invalid JSON from websocket %s", sid)
                first = False
        finally:
            # ComfyUI pops by sid, even if a newer socket took that sid: reproduced on purpose.
            self.hub.connections.pop(sid, None)
        return ws


# --- app ------------------------------------------------------------------------------------


def _is_loopback(host: str | None) -> bool:
    if not host:
        return False
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


@web.middleware
async def origin_only_middleware(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """ComfyUI's default guard: 403 when a loopback Host and the Origin disagree."""
    if "Host" in request.headers and "Origin" in request.headers:
        host_domain = request.headers["Host"].lower()
        origin = urllib.parse.urlparse(request.headers["Origin"])
        origin_domain = origin.netloc.lower()
        host_parsed = urllib.parse.urlsplit("//" + host_domain)
        loopback = _is_loopback(host_parsed.hostname)
        if origin.port is None:
            host_domain = host_parsed.hostname or ""
        if host_parsed.port is None:
            origin_domain = origin.hostname or ""
        if loopback and host_domain and origin_domain and host_domain != origin_domain:
            log.warning(
                "request with non matching host and origin %s != %s, returning 403",
                host_domain,
                origin_domain,
            )
            return web.Response(status=403)
    if request.method == "OPTIONS":
        return web.Response()
    return await handler(request)


def build_app(server: StandinServer) -> web.Application:
    app = web.Application(
        client_max_size=int(server.config.max_upload_mb * 1024 * 1024),
        middlewares=[
            cache_control_middleware,
            origin_only_middleware,
            http_fault_middleware(server.faults),
        ],
    )
    faithful = [
        *core_routes(server),
        *file_routes(server),
        *user_routes(server, server.users),
        *frontend_routes(server, server.web_root),
        ("GET", "/ws", server.websocket),
    ]
    for method, path, handler in faithful:
        for prefix in ("", "/api"):
            _add(app, method, prefix + path, handler)
    for method, path, handler in [*internal_routes(server), *control_routes(server)]:
        _add(app, method, path, handler)
    _add(app, "GET", "/templates/index.json", templates_index)
    # Last: the editor's files are matched only after every route.
    add_static(app, server.web_root)

    async def on_shutdown(app: web.Application) -> None:
        await server.hub.drop_all(mode="close")

    app.on_shutdown.append(on_shutdown)
    return app


def _add(app: web.Application, method: str, path: str, handler: Any) -> None:
    if method == "GET":
        app.router.add_get(path, handler)
    else:
        app.router.add_route(method, path, handler)


# --- lifecycle ------------------------------------------------------------------------------


class StandinHandle:
    """A running stand-in: its base URL, its server object, and ``await close()``."""

    def __init__(self, server: StandinServer, runner: web.AppRunner, host: str, port: int) -> None:
        self.server = server
        self.host = host
        self.port = port
        self.url = f"http://{_url_host(host)}:{port}"
        self.ws_url = f"ws://{_url_host(host)}:{port}/ws"
        self.data_dir = Path(server.dirs.root)
        self._runner = runner
        self._closed = False

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        await self.server.stop()
        await self._runner.cleanup()

    async def __aenter__(self) -> StandinHandle:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


async def start_standin(
    *,
    data_dir: str | os.PathLike[str],
    host: str = "127.0.0.1",
    port: int = 0,
    step_seconds: float = 0.0,
    max_upload_mb: float = 100.0,
    with_models: str | os.PathLike[str] | None = None,
    exit_process: Callable[[int], Any] = os._exit,
    profile: str | None = None,
    speed: float = 1.0,
) -> StandinHandle:
    """Start a stand-in on the running loop; ``port=0`` picks a free port.

    ``profile`` names a timing profile (``timing.PROFILES``, e.g. ``"fastwan-h200"``) and
    ``speed`` divides its durations; an unknown name or a speed <= 0 is a ValueError.
    """
    config = StandinConfig(
        data_dir=Path(data_dir),
        host=host,
        port=port,
        step_seconds=step_seconds,
        max_upload_mb=max_upload_mb,
        exit_process=exit_process,
        profile=profile,
        speed=speed,
    )
    server = StandinServer(config, asyncio.get_running_loop())
    if with_models is not None:
        written = write_placeholder_models(server.dirs, with_models)
        log.info("wrote %d placeholder model file(s)", len(written))
    runner = web.AppRunner(
        build_app(server), access_log=None, handle_signals=False, shutdown_timeout=2.0
    )
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    bound_port = runner.addresses[0][1]
    server.start()
    handle = StandinHandle(server, runner, host, bound_port)
    server.url = handle.url
    if server.web_root is not None:
        log.info("ComfyUI graph editor (frontend %s): %s/", PACKAGE_VERSION, handle.url)
    else:
        log.warning(
            "no graph editor at %s/: comfyui-frontend-package is not installed "
            '(pip install -e ".[standin]")',
            handle.url,
        )
    return handle
