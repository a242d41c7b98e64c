"""A full disk under the proxy's data dir: jobs are submitted until writes fail, then space is
freed. Every accepted job ends (completed, or failed with a reason a person can act on) and
the proxy dispatches again without a restart.

The data dir is a small tmpfs, so this needs root (mount) and skips otherwise."""

from __future__ import annotations

import asyncio
import errno
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.e2e.conftest import SMALL
from tests.e2e.test_backend_faults import watch_queue
from tests.support import follow_job, proxy_server

WAIT_S = 90.0
CHUNK = 1 << 20


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs for the data dir needs root")
    mount = tmp_path / "data"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=32m", "tmpfs", str(mount)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip() or done.returncode}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], capture_output=True, timeout=30)


def _fill(path: Path) -> int:
    """Write `path` until the disk is full, to the last byte; returns its size."""
    size = 0
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    try:
        for chunk in (CHUNK, 4096, 1):
            block = b"\0" * chunk
            while True:
                try:
                    written = os.write(fd, block)  # unbuffered: a short write is kept
                except OSError as exc:
                    assert exc.errno == errno.ENOSPC, exc
                    break
                size += written
    finally:
        os.close(fd)
    return size


async def test_a_full_disk_ends_every_job_and_dispatching_resumes(
    standin, make_settings, small_disk
):
    settings = make_settings([standin.url], data_dir=small_disk)
    filler = small_disk / "filler"
    slow = {**_native(SMALL), "num_inference_steps": 12}  # about 0.6 s each in the stand-in
    async with (
        watch_queue(standin) as comfy_queue,
        proxy_server(settings) as proxy,
        httpx.AsyncClient(base_url=proxy.url, timeout=30) as client,
    ):
        accepted: list[str] = []
        for n in range(3):  # in flight when the disk fills: running, in ComfyUI, in our queue
            r = await client.post("/api/jobs", json={"prompt": f"in flight {n}", **slow})
            assert r.status_code in (200, 201), r.text
            accepted.append(r.json()["id"])
        await follow_job(client, accepted[0], lambda j: j["status"] == "running", WAIT_S)
        dispatcher = proxy.app.state.services.dispatcher  # the lifespan has run by now

        await asyncio.to_thread(_fill, filler)
        refused: list[httpx.Response] = []
        for n in range(20):  # until the database cannot take another job
            r = await client.post("/api/jobs", json={"prompt": f"full {n}", **_native(SMALL)})
            if r.status_code >= 500:
                refused.append(r)
                break
            assert r.status_code in (200, 201), r.text
            accepted.append(r.json()["id"])
        assert refused, "the disk never filled up: nothing was tested"
        body = refused[0].json()
        assert body["error"] and "Error" not in body["error"], body  # no class names
        # ComfyUI finishes what it was given; the proxy cannot record it meanwhile.
        # (The watch's first message is the idle state from before the jobs: skip to busy.)
        await comfy_queue.until_remaining(lambda n: n >= 1, WAIT_S)
        await comfy_queue.until_remaining(lambda n: n == 0, WAIT_S)

        await asyncio.to_thread(filler.unlink)  # space is back; no restart follows
        for job_id in accepted:
            final, _ = await follow_job(client, job_id, {"completed", "failed"}, WAIT_S)
            if final["status"] == "failed":
                assert final["error"], final
                assert "Error:" not in final["error"] and "Traceback" not in final["error"]
        assert dispatcher.running

        after = await client.post("/api/jobs", json={"prompt": "after", **_native(SMALL)})
        assert after.status_code in (200, 201), after.text
        final, _ = await follow_job(client, after.json()["id"], {"completed", "failed"}, WAIT_S)
        assert final["status"] == "completed", final
        listed = (await client.get("/api/jobs")).json()
        jobs = listed["jobs"] if isinstance(listed, dict) else listed
        assert all(j["status"] in ("completed", "failed") for j in jobs), jobs


def _native(fields: dict) -> dict:
    names = {"length": "num_frames", "steps": "num_inference_steps"}
    return {names.get(k, k): v for k, v in fields.items()}
