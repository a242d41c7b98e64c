"""Real servers on loopback ports, for the test suite and the benchmarks alike: the stand-in
ComfyUI as a child process (the proxy meets it only over HTTP and websockets) and the proxy
under uvicorn.

Readiness is never waited for with sleeps: the stand-in prints one READY line, and the proxy
is served on a socket bound before the server starts, so early clients simply queue.
"""

from __future__ import annotations

import asyncio
import os
import selectors
import socket
import subprocess
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import uvicorn

from proxy.app import create_app
from proxy.launcher import standin_command
from proxy.settings import Settings

REPO_ROOT = Path(__file__).resolve().parent.parent
MANIFEST = REPO_ROOT / "comfyui" / "models.json"


@dataclass
class StandinProcess:
    url: str
    process: subprocess.Popen[bytes]
    data_dir: Path

    def control(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """Call a stand-in control route (`/_standin/...`)."""
        response = httpx.request(method, f"{self.url}/_standin/{path}", timeout=10, **kwargs)
        response.raise_for_status()
        return response


def _read_ready_line(process: subprocess.Popen[bytes], timeout_s: float) -> str:
    assert process.stdout is not None
    with selectors.DefaultSelector() as sel:
        sel.register(process.stdout, selectors.EVENT_READ)
        if not sel.select(timeout_s):
            raise TimeoutError(f"the stand-in printed nothing within {timeout_s} s")
    return process.stdout.readline().decode().strip()


@contextmanager
def standin_process(
    data_dir: Path,
    *,
    step_seconds: float = 0.0,
    port: int = 0,
    with_models: bool = True,
    timeout_s: float = 30.0,
    profile: str | None = None,
    speed: float = 1.0,
) -> Iterator[StandinProcess]:
    cmd = standin_command(
        data_dir, port, step_seconds, with_models=with_models, profile=profile, speed=speed
    )
    process = subprocess.Popen(
        cmd, cwd=REPO_ROOT, stdout=subprocess.PIPE, env={**os.environ, "PYTHONUNBUFFERED": "1"}
    )
    try:
        line = _read_ready_line(process, timeout_s)
        if not line.startswith("STANDIN READY "):
            raise RuntimeError(f"the stand-in did not start: {line!r} (exit {process.poll()})")
        yield StandinProcess(line.removeprefix("STANDIN READY "), process, data_dir)
    finally:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if process.stdout is not None:
            process.stdout.close()


def bound_socket() -> socket.socket:
    # IPPROTO_TCP named explicitly: asyncio sets TCP_NODELAY on accepted connections only when
    # the listening socket says TCP, and without it every kept-alive request waits ~40 ms for
    # a delayed ACK (Nagle), which skews every latency a test or benchmark sees.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    sock.set_inheritable(True)
    return sock


@dataclass
class ProxyServer:
    url: str
    settings: Settings
    app: object


class _StartedServer(uvicorn.Server):
    """uvicorn's server with an event set once its startup (the app's lifespan) is done."""

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self.up = asyncio.Event()

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if not self.should_exit:
            self.up.set()


@asynccontextmanager
async def proxy_server(settings: Settings) -> AsyncIterator[ProxyServer]:
    """The proxy under uvicorn in this event loop, on a free loopback port."""
    sock = bound_socket()
    port = sock.getsockname()[1]
    settings = settings.model_copy(update={"port": port, "host": "127.0.0.1"})
    try:
        app = create_app(settings)
    except BaseException:
        sock.close()
        raise
    # As `proxy up` serves it: X-Forwarded-* believed from TRUSTED_PROXIES only.
    config = uvicorn.Config(app, log_level="warning", lifespan="on", proxy_headers=False)
    server = _StartedServer(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        # Yield only once the lifespan has run: a test reads app.state.services at once.
        started = asyncio.create_task(server.up.wait())
        async with asyncio.timeout(60):
            await asyncio.wait({task, started}, return_when=asyncio.FIRST_COMPLETED)
        started.cancel()
        if task.done():
            task.result()
            raise RuntimeError("the proxy stopped while starting")
        yield ProxyServer(f"http://127.0.0.1:{port}", settings, app)
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 30)
        sock.close()


async def job_views(lines: AsyncIterator[str]) -> AsyncIterator[dict[str, Any]]:
    """The job views an SSE stream of `/api/events` or `/api/jobs/{id}/events` carries:
    each `job` event's job, and each `progress` event merged into the last view of its job
    (one not seen whole yet is skipped)."""
    import json

    known: dict[str, dict[str, Any]] = {}
    name = "message"
    async for line in lines:
        if line.startswith("event: "):
            name = line[7:].strip()
        elif line.startswith("data: "):
            data = json.loads(line[6:])
            if name == "progress":
                if data["id"] not in known:
                    continue
                view = {**known[data["id"]], **data}
            else:
                view = data["job"]
            known[view["id"]] = view
            yield view
        elif not line:
            name = "message"


async def follow_job(
    client: httpx.AsyncClient,
    job_id: str,
    until: set[str] | Callable[[dict[str, Any]], bool],
    timeout_s: float = 60.0,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Follow a job over its SSE stream until its native status is in `until` (or, given a
    function, until it says so of the job view).

    Returns the final job view and every job view seen on the way (for progress checks).
    """
    seen: list[dict[str, Any]] = []
    async with asyncio.timeout(timeout_s):
        async with client.stream("GET", f"/api/jobs/{job_id}/events") as stream:
            async for job in job_views(stream.aiter_lines()):
                seen.append(job)
                if until(job) if callable(until) else job["status"] in until:
                    return job, seen
    raise AssertionError("the event stream ended before the job did")
