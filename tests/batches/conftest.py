"""A proxy whose only backend never answers: jobs stay queued, and tests move them through
their lifecycle with the job writer, as the tracker would."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import av
import httpx
import numpy as np
import pytest

from proxy.jobs.models import ACTIVE, JobStatus, OutputRecord
from proxy.jobs.store import utcnow
from proxy.services import Services
from proxy.settings import Settings
from tests.support import ProxyServer, offline_settings_for, proxy_server

SMALL = {"width": 64, "height": 64, "length": 9, "steps": 4, "fps": 8}


def write_mp4(path: Path, frames: int, width: int = 64, height: int = 64, fps: int = 8) -> None:
    with av.open(str(path), "w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"preset": "ultrafast"}
        for i in range(frames):
            pixels = np.full((height, width, 3), (i * 25) % 256, dtype=np.uint8)
            container.mux(stream.encode(av.VideoFrame.from_ndarray(pixels, format="rgb24")))
        container.mux(stream.encode(None))


@dataclass
class Offline:
    server: ProxyServer
    client: httpx.AsyncClient

    @property
    def services(self) -> Services:
        return self.server.app.state.services  # type: ignore[attr-defined]

    @property
    def ws_url(self) -> str:
        return self.server.url.replace("http://", "ws://")

    async def set(self, job_id: str, **fields: Any) -> None:
        job = await self.services.jobs.writer.update(job_id, **fields)
        assert job is not None

    async def run(self, job_id: str, progress: float = 40.0, stage: str = "sampling") -> None:
        await self.set(
            job_id,
            status=JobStatus.RUNNING,
            progress=progress,
            stage=stage,
            started_at=utcnow(),
            message=f"{stage.capitalize()}",
        )

    async def complete(self, job_id: str, frames: int = 9, **size: int) -> None:
        """Store a real MP4 as the job's output and mark it completed."""
        name = f"{job_id}.mp4"
        path = self.services.outputs.path_for(name)
        write_mp4(path, frames, **size)
        record = OutputRecord(
            filename=name,
            content_type="video/mp4",
            size_bytes=path.stat().st_size,
            node_id="58",
            comfy_filename=f"video/{name}",
            frames=frames,
        )
        await self.set(
            job_id,
            expect=ACTIVE,
            status=JobStatus.COMPLETED,
            outputs=[record],
            progress=100.0,
            stage="done",
            message="Video ready",
            finished_at=utcnow(),
        )

    async def fail(self, job_id: str, error: str = "node 8 (VAEDecode) failed: boom") -> None:
        await self.set(
            job_id,
            expect=ACTIVE,
            status=JobStatus.FAILED,
            error=error,
            message=error,
            finished_at=utcnow(),
        )


@pytest.fixture
def offline_settings(tmp_path: Path) -> Callable[..., Settings]:
    def make(**kw: object) -> Settings:
        return offline_settings_for(tmp_path / "data", **kw)

    return make


@pytest.fixture
async def offline(offline_settings) -> AsyncIterator[Offline]:
    async with proxy_server(offline_settings(max_batch_size=3)) as server:
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
            yield Offline(server, client)
