"""Stopping the proxy (Ctrl+C, SIGTERM) with event streams open ends them cleanly: the process
exits within seconds, each client sees its stream end (not a broken connection), and the log
holds no traceback or error."""

from __future__ import annotations

import asyncio
import signal
import time

import httpx
import pytest

from tests.launcher.proc import nowhere, proxy_env, running_proxy

# uvicorn's timeout_graceful_shutdown is 5 s: a stream still open then is cut. Well under it.
EXIT_WITHIN_S = 4.5


async def _follow(client: httpx.AsyncClient, path: str, connected: asyncio.Event) -> list[str]:
    """Read a stream to its end; its lines. A connection broken mid-response raises."""
    lines = []
    async with client.stream("GET", path) as stream:
        assert stream.status_code == 200
        async for line in stream.aiter_lines():
            lines.append(line)
            if line.startswith(": connected"):
                connected.set()
    return lines


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
async def test_stopping_with_open_event_streams_is_clean(tmp_path, sig):
    env = proxy_env(tmp_path / "data", COMFYUI_URL=nowhere())
    async with running_proxy("serve", env) as proxy:
        await proxy.wait_ready()
        async with httpx.AsyncClient(base_url=proxy.url, timeout=30) as client:
            job = (await client.post("/api/jobs", json={"prompt": "waits", "start": False})).json()
            paths = ["/api/events", "/api/events", f"/api/jobs/{job['id']}/events"]
            connected = [asyncio.Event() for _ in paths]
            streams = [
                asyncio.create_task(_follow(client, path, ready))
                for path, ready in zip(paths, connected, strict=True)
            ]
            async with asyncio.timeout(30):
                await asyncio.gather(*(ready.wait() for ready in connected))
            start = time.monotonic()
            proxy.process.send_signal(sig)
            code = await proxy.finish(30)
            took = time.monotonic() - start
            # Every stream ended as a complete response (a cut one raises here).
            ended = await asyncio.wait_for(asyncio.gather(*streams), 10)
    assert took < EXIT_WITHIN_S, f"took {took:.1f} s to stop:\n{proxy.text}"
    # SIGINT exits 0; uvicorn re-raises SIGTERM after its clean shutdown, so that is -15.
    assert code in (0, -signal.SIGTERM), proxy.text
    assert "Traceback" not in proxy.text, proxy.text
    assert "CancelledError" not in proxy.text, proxy.text
    assert "ASGI callable returned without completing response" not in proxy.text, proxy.text
    assert "ERROR" not in proxy.text, proxy.text
    assert all(lines[0].startswith(": connected") for lines in ended)
    assert any("snapshot" in line for line in ended[2])  # the job's stream had begun
