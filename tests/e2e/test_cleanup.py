"""What a job leaves in ComfyUI is taken out again: its history entry once it has ended, its
output file once the proxy has its own copy, its uploaded input once no attempt needs it
(completed) or the job is deleted; on disk only where ComfyUI's folders are configured.
Retention deletes old finished jobs the same way."""

from __future__ import annotations

import asyncio
import io
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image

from proxy.jobs.models import Job
from proxy.jobs.store import utcnow
from proxy.services import Services
from proxy.settings import Settings
from tests.support import StandinProcess, follow_job, proxy_server

WAIT_S = 60.0


@dataclass
class World:
    http: httpx.AsyncClient
    services: Services
    standin: StandinProcess

    @property
    def output_dir(self) -> Path:
        return self.standin.data_dir / "output"

    @property
    def input_dir(self) -> Path:
        return self.standin.data_dir / "input"

    async def image_job(self, **fields: str) -> str:
        """An image-to-video job through the Wan2.1 surface (its image is uploaded to
        ComfyUI's input folder)."""
        buf = io.BytesIO()
        Image.new("RGB", (64, 64), (200, 40, 40)).save(buf, format="PNG")
        data = {"prompt": "the sun sets", "num_frames": "9", "fps": "8", "width": "64"}
        data |= {"height": "64", "num_inference_steps": "4", **fields}
        r = await self.http.post(
            "/api/v1/generate/image-to-video",
            files={"image": ("sun.png", buf.getvalue(), "image/png")},
            data=data,
        )
        assert r.status_code == 200, r.text
        return str(r.json()["job_id"])

    async def finish(self, job_id: str, status: str = "completed") -> Job:
        """Follow the job to its end, then wait (bounded) for its cleanup."""
        final, _ = await follow_job(
            self.http, job_id, {"completed", "failed", "stopped"}, timeout_s=WAIT_S
        )
        assert final["status"] == status, final.get("error")
        await self.idle()
        return await self.services.jobs.get(job_id)

    async def idle(self) -> None:
        assert self.services.cleanup is not None
        await asyncio.wait_for(self.services.cleanup.idle(), WAIT_S)

    def history(self, prompt_id: str | None) -> dict[str, Any]:
        assert prompt_id is not None
        answer = httpx.get(f"{self.standin.url}/history/{prompt_id}", timeout=10)
        answer.raise_for_status()
        result: dict[str, Any] = answer.json()
        return result


@pytest.fixture
def world_for(
    standin: StandinProcess, make_settings: Callable[..., Settings]
) -> Callable[..., Any]:
    @asynccontextmanager
    async def make(*, folders: bool = True, **kw: object) -> AsyncIterator[World]:
        if folders:
            kw["comfyui_output_dir"] = standin.data_dir / "output"
            kw["comfyui_input_dir"] = standin.data_dir / "input"
        async with proxy_server(make_settings([standin.url], **kw)) as server:
            async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
                await http.get("/health")  # the lifespan has run
                services: Services = server.app.state.services  # type: ignore[attr-defined]
                for backend in services.pool.backends:
                    assert await backend.socket.wait_connected(10)
                yield World(http, services, standin)

    return make


def comfy_files(folder: Path, job_id: str) -> list[Path]:
    """The job's files in one of ComfyUI's folders (outputs are named after the job)."""
    return [p for p in folder.rglob("*") if p.is_file() and job_id in p.name]


async def test_a_completed_job_leaves_nothing_in_comfyui_and_is_still_served(world_for):
    async with world_for() as world:
        job_id = await world.image_job()
        job = await world.finish(job_id)

        assert world.history(job.prompt_id) == {}
        [output] = job.outputs
        assert output.comfy_filename.startswith("fastwan/")
        assert not (world.output_dir / output.comfy_filename).exists()
        assert comfy_files(world.output_dir, job_id) == []
        # A completed job never runs again: its upload is not needed in ComfyUI either.
        [info] = job.inputs.values()
        assert not (world.input_dir / info["upload_name"]).exists()

        # The proxy's own copy is untouched.
        video = await world.http.get(f"/api/jobs/{job_id}/video")
        assert video.status_code == 200 and video.headers["content-type"] == "video/mp4"
        assert len(video.content) == output.size_bytes


async def test_a_failed_job_keeps_its_upload_until_it_is_deleted(world_for):
    async with world_for() as world:
        world.standin.control(
            "POST", "faults/node", json={"class_type": "KSampler", "message": "boom"}
        )
        job_id = await world.image_job()
        job = await world.finish(job_id, "failed")

        # ComfyUI ran it: the history entry goes, but the upload stays (a start again of a
        # failed job may be using it).
        assert world.history(job.prompt_id) == {}
        [info] = job.inputs.values()
        upload = world.input_dir / info["upload_name"]
        assert upload.is_file()

        assert (await world.http.delete(f"/api/jobs/{job_id}")).status_code in (200, 204)
        assert not upload.exists()
        assert (await world.http.get(f"/api/jobs/{job_id}")).status_code == 404
        await world.idle()


async def test_delete_of_a_running_job_removes_its_files_in_comfyui(world_for):
    async with world_for() as world:
        # Deleted while still being followed: the delete itself removes what is in ComfyUI.
        job_id = await world.image_job(num_inference_steps="40")
        await follow_job(world.http, job_id, {"running"}, timeout_s=WAIT_S)
        job = await world.services.jobs.get(job_id)
        [info] = job.inputs.values()
        upload = world.input_dir / info["upload_name"]
        assert upload.is_file()

        assert (await world.http.delete(f"/api/jobs/{job_id}")).status_code in (200, 204)
        assert not upload.exists()
        await world.idle()  # the interrupted prompt's entry, once ComfyUI has written it
        assert world.history(job.prompt_id) == {}
        assert comfy_files(world.output_dir, job_id) == []


async def test_without_the_folders_only_the_history_goes(world_for):
    async with world_for(folders=False) as world:
        job_id = await world.image_job()
        job = await world.finish(job_id)

        assert world.history(job.prompt_id) == {}
        [output] = job.outputs
        assert (world.output_dir / output.comfy_filename).is_file()
        [info] = job.inputs.values()
        upload = world.input_dir / info["upload_name"]
        assert upload.is_file()

        assert (await world.http.delete(f"/api/jobs/{job_id}")).status_code in (200, 204)
        await world.idle()
        assert upload.is_file() and (world.output_dir / output.comfy_filename).is_file()


async def test_a_history_that_cannot_be_deleted_is_logged_and_the_job_completes(
    world_for, caplog: pytest.LogCaptureFixture
):
    async with world_for() as world:
        world.standin.control("POST", "faults/http_error", json={"path": "/history"})
        with caplog.at_level(logging.WARNING, logger="proxy.cleanup"):
            job_id = await world.image_job()
            job = await world.finish(job_id)

        assert job.status.value == "completed"
        assert job.prompt_id in world.history(job.prompt_id)
        assert any(
            "could not delete prompt" in r.getMessage() and job.prompt_id in r.getMessage()
            for r in caplog.records
        )
        assert (await world.http.get(f"/api/jobs/{job_id}/video")).status_code == 200


async def test_retention_deletes_an_old_finished_job_and_keeps_the_rest(world_for):
    async with world_for(job_retention_days=1.0) as world:
        retention = world.services.retention
        assert retention is not None
        store = world.services.jobs.store

        old_id = await world.image_job()
        old = await world.finish(old_id)
        recent_id = await world.image_job()
        await world.finish(recent_id)
        # Finished long ago, as far as the store knows.
        await store.update(old_id, finished_at=utcnow() - timedelta(days=2))

        active_id = await world.image_job(num_inference_steps="100")
        await follow_job(world.http, active_id, {"running"}, timeout_s=WAIT_S)
        # An active job is never retention's, whatever its dates say.
        await store.update(active_id, finished_at=utcnow() - timedelta(days=3))

        assert await retention.sweep() == 1
        assert await store.get(old_id) is None
        assert not (world.services.outputs.root / old.outputs[0].filename).exists()
        assert (await world.http.get(f"/api/jobs/{recent_id}")).status_code == 200
        active = await store.get(active_id)
        assert active is not None and active.status.value == "running"
        assert await retention.sweep() == 0

        assert (await world.http.delete(f"/api/jobs/{active_id}")).status_code in (200, 204)
        await world.idle()
