"""`python -m proxy up` (what ./run.sh runs) with nothing configured: the stand-in, loudly."""

from __future__ import annotations

import asyncio
import os
import signal
import sys

import anyio
import httpx

from proxy.launcher import free_port
from proxy.settings import REPO_ROOT
from tests.support import follow_job


async def test_up_serves_the_api_on_the_standin_and_stops_it_on_exit(tmp_path):
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("COMFYUI_URL", "COMFYUI_DIR")}
    env.update(PORT=str(port), DATA_DIR=str(tmp_path / "data"), PROXY_HOST="127.0.0.1")
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "proxy",
        "up",
        "--standin-step-seconds",
        "0",
        cwd=REPO_ROOT,
        env=env,
        stderr=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )
    log: list[str] = []
    try:
        async with asyncio.timeout(60):
            while True:  # read the log until uvicorn says the app has started
                line = (await proc.stderr.readline()).decode()
                assert line, f"proxy exited early: {''.join(log)}"
                log.append(line)
                if "Application startup complete" in line:
                    break
        text = "".join(log)
        assert "STAND-IN" in text and "SYNTHETIC TEST PATTERNS" in text
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
            health = (await client.get("/")).json()
            assert health["standin"] is True and "synthetic" in health["notice"]
            assert health["comfyui"][0]["status"] == "up"
            page = await client.get("/", headers={"accept": "text/html"})
            assert page.headers["content-type"].startswith("text/html")
            job_id = (
                await client.post(
                    "/generate",
                    json={"prompt": "up", "width": 64, "height": 64, "length": 5, "steps": 2},
                )
            ).json()["job_id"]
            final, _ = await follow_job(client, job_id, {"completed", "failed"})
            assert final["status"] == "completed"
            models = (await client.get("/api/models")).json()
            t2v = next(m for m in models["models"] if m["id"] == "fastwan_t2v")
            assert t2v["ready"] is True and t2v["missing"] == []
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGINT)
        rest = await asyncio.wait_for(proc.stderr.read(), 30)
        await asyncio.wait_for(proc.wait(), 30)
    assert proc.returncode == 0, rest.decode()[-2000:]
    # the stand-in child went with it: nothing listens on its port any more
    standin_url = health["comfyui"][0]["url"]
    async with httpx.AsyncClient() as client:
        try:
            await client.get(f"{standin_url}/system_stats", timeout=2)
            raise AssertionError("the stand-in outlived the proxy")
        except httpx.TransportError:
            pass


async def test_the_standin_dies_with_a_killed_proxy(tmp_path):
    """SIGKILL leaves no chance to clean up: the child must still not outlive the proxy."""
    if not hasattr(os, "pidfd_open"):
        import pytest

        pytest.skip("needs Linux pidfds")
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("COMFYUI_URL", "COMFYUI_DIR")}
    env.update(PORT=str(port), DATA_DIR=str(tmp_path / "data"), PROXY_HOST="127.0.0.1")
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "proxy",
        "up",
        cwd=REPO_ROOT,
        env=env,
        stderr=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.DEVNULL,
    )
    try:
        async with asyncio.timeout(60):
            while b"Application startup complete" not in await proc.stderr.readline():
                pass
        children_file = anyio.Path(f"/proc/{proc.pid}/task/{proc.pid}/children")
        children = (await children_file.read_text()).split()
        assert len(children) == 1
        pidfd = os.pidfd_open(int(children[0]))
    finally:
        proc.kill()
        await proc.wait()
    try:
        # A pidfd becomes readable when its process exits: wait for that, bounded.
        exited = asyncio.get_running_loop().create_future()
        asyncio.get_running_loop().add_reader(pidfd, exited.set_result, None)
        await asyncio.wait_for(exited, 20)
    finally:
        asyncio.get_running_loop().remove_reader(pidfd)
        os.close(pidfd)
    await asyncio.wait_for(proc.stderr.read(), 10)
