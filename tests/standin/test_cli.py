"""The stand-in as a separate process, started through its command line."""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import httpx
import pytest
from websockets.asyncio.client import connect

from .conftest import MANIFEST, REPO, WAIT_S, WsListener, submit, t2v_graph

READY_TIMEOUT_S = 20.0

Spawn = Callable[..., Awaitable[tuple[asyncio.subprocess.Process, str]]]


@pytest.fixture
async def spawn(tmp_path: Path) -> AsyncIterator[Spawn]:
    """Start ``python -m comfyui.standin``; returns (process, url) once READY is printed."""
    processes: list[asyncio.subprocess.Process] = []

    async def start(*extra: str) -> tuple[asyncio.subprocess.Process, str]:
        log_path = tmp_path / f"stderr-{len(processes)}.log"
        log = await asyncio.to_thread(log_path.open, "wb")
        try:
            process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "comfyui.standin",
                "--host",
                "127.0.0.1",
                "--port",
                "0",
                "--data-dir",
                str(tmp_path / "data"),
                *extra,
                cwd=REPO,
                stdout=asyncio.subprocess.PIPE,
                stderr=log,
            )
        finally:
            log.close()
        processes.append(process)
        assert process.stdout is not None
        line = await asyncio.wait_for(process.stdout.readline(), READY_TIMEOUT_S)
        text = line.decode().strip()
        assert text.startswith("STANDIN READY http://127.0.0.1:"), text
        return process, text.split()[-1]

    yield start
    for process in processes:
        if process.returncode is None:
            process.kill()
        with contextlib.suppress(Exception):
            assert process.stdout is not None
            await asyncio.wait_for(process.stdout.read(), WAIT_S)
        await asyncio.wait_for(process.wait(), WAIT_S)


async def test_cli_ready_line_and_clean_stop(spawn: Spawn, tmp_path: Path) -> None:
    process, url = await spawn("--with-models", str(MANIFEST))
    async with httpx.AsyncClient(base_url=url, timeout=WAIT_S) as http:
        stats = (await http.get("/system_stats")).json()
        assert "standin" in stats["devices"][0]["name"]
        models = (await http.get("/models/diffusion_models")).json()
        assert models == ["wan2.2_ti2v_5B_fp16.safetensors"]
    process.send_signal(signal.SIGTERM)
    assert await asyncio.wait_for(process.wait(), WAIT_S) == 0
    assert process.stdout is not None
    assert await process.stdout.read() == b""  # READY was the only stdout line
    log = await asyncio.to_thread((tmp_path / "stderr-0.log").read_text)
    assert "NOT COMFYUI" in log and "SYNTHETIC TEST-PATTERN" in log


async def test_exit_fault_kills_the_process_mid_run(spawn: Spawn) -> None:
    process, url = await spawn("--with-models", str(MANIFEST), "--step-seconds", "0.01")
    async with httpx.AsyncClient(base_url=url, timeout=WAIT_S) as http:
        await http.post("/_standin/faults/exit", json={"after_step": 3, "exit_code": 7})
        async with connect(url.replace("http", "ws") + "/ws?clientId=cli") as sock:
            listener = WsListener(sock)
            await listener.next()
            await submit(http, t2v_graph(steps=8), client_id="cli")
            seen = []
            with contextlib.suppress(ConnectionError):
                while True:
                    seen.append(await listener.next())
            await asyncio.wait_for(listener.closed.wait(), WAIT_S)
    assert [m["data"]["value"] for m in seen if m["type"] == "progress"] == [1, 2, 3]
    assert not any(m["type"] == "execution_success" for m in seen)
    assert await asyncio.wait_for(process.wait(), WAIT_S) == 7
    assert json.dumps(seen)  # all messages were complete JSON
