"""Input files with an S3 output store, end to end: two proxy replicas (each its own DATA_DIR,
one database, one bucket; run one after the other) in front of the stand-in ComfyUI, moto's S3
server on another loopback port. An image received by one replica (an upload by id, or the
file of a create call) is kept in the bucket, not on its disk, and the other replica hands it
to ComfyUI; deleting jobs and uploads takes their objects; an input missing from the bucket
fails its job with a message naming the store. Every wait is bounded."""

from __future__ import annotations

import asyncio
import io
from pathlib import Path
from typing import Any

import av
import httpx
import numpy as np
from PIL import Image

from tests.e2e.test_s3_outputs import WAIT_S, keys, s3_settings
from tests.media.test_s3_store import MotoS3
from tests.support import follow_job, proxy_server

SOURCE_RGB = (210, 60, 30)
I2V = {
    "model_id": "fastwan_i2v",
    "prompt": "the sun sets",
    "width": 64,
    "height": 64,
    "num_frames": 9,
    "num_inference_steps": 4,
}


def jpeg() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (200, 120), SOURCE_RGB).save(buf, format="JPEG", quality=95)
    return buf.getvalue()


def files_in(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.is_file()] if folder.exists() else []


def stored_name(job: dict[str, Any]) -> str:
    """The job's own input file (its name in ComfyUI is `fastwan_<stored name>`)."""
    return str(job["params"]["image"]).removeprefix("fastwan_")


async def upload(client: httpx.AsyncClient) -> str:
    r = await client.post(
        "/api/uploads", params={"kind": "image"}, files={"file": ("sun.jpg", jpeg(), "x/y")}
    )
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


async def create(client: httpx.AsyncClient, **kw: Any) -> dict[str, Any]:
    r = await client.post("/api/jobs", **kw)
    assert r.status_code == 201, r.text
    return dict(r.json())


async def completed(client: httpx.AsyncClient, job_id: str, tmp_path: Path) -> Path:
    final, _ = await follow_job(client, job_id, {"completed", "failed", "cancelled"}, WAIT_S)
    assert final["status"] == "completed", final.get("error")
    video = await client.get(f"/api/jobs/{job_id}/video", follow_redirects=True)
    assert video.status_code == 200, video.text
    path = tmp_path / f"{job_id}.mp4"
    path.write_bytes(video.content)
    return path


def first_frame_colour(path: Path) -> Any:
    with av.open(str(path)) as container:
        first = next(container.decode(video=0)).to_ndarray(format="rgb24")
    return first.reshape(-1, 3).mean(axis=0)


async def test_inputs_received_by_one_replica_run_on_another(
    standin, make_settings, moto_s3: MotoS3, tmp_path: Path
) -> None:
    bucket = moto_s3.bucket()
    shared = {
        "database_url": f"sqlite+aiosqlite:///{tmp_path / 'shared.db'}",
        **s3_settings(moto_s3, bucket),
    }
    receiver = make_settings([standin.url], data_dir=tmp_path / "a", **shared)
    runner = make_settings([standin.url], data_dir=tmp_path / "b", **shared)

    async with (
        proxy_server(receiver) as proxy,
        httpx.AsyncClient(base_url=proxy.url, timeout=30) as client,
    ):
        upload_id = await upload(client)
        # The file of a create call, for a job started later (by the other replica).
        form = {k: str(v) for k, v in I2V.items()} | {"start": "false"}
        sent = await create(client, data=form, files={"image": ("sun.jpg", jpeg(), "image/jpeg")})
        assert sent["status"] == "pending"
        assert len(await keys(moto_s3, bucket)) == 2
        assert files_in(receiver.uploads_path) == [], "an input stayed on the receiving replica"

    async with (
        proxy_server(runner) as proxy,
        httpx.AsyncClient(base_url=proxy.url, timeout=30) as client,
    ):
        named = await create(client, json={**I2V, "image": upload_id})
        r = await client.post(f"/api/jobs/{sent['id']}/start")
        assert r.status_code == 200, r.text
        for job in (named, sent):
            video = await completed(client, job["id"], tmp_path)
            # The image is the first frame: ComfyUI got the bytes that were uploaded.
            assert np.abs(first_frame_colour(video) - SOURCE_RGB).max() < 12
        inputs = [f"outputs/inputs/{stored_name(job)}" for job in (named, sent)]
        before = await keys(moto_s3, bucket)
        assert set(inputs) < set(before) and len(before) == 5  # + the upload, two videos
        assert files_in(runner.uploads_path) == []
        assert files_in(runner.data_dir / "s3-staging") == [], "a fetched input was kept"

        for job in (named, sent):
            assert (await client.delete(f"/api/jobs/{job['id']}")).status_code == 200
        [left] = await keys(moto_s3, bucket)  # the upload's own file, for later jobs
        assert left.startswith("outputs/inputs/") and left not in inputs
        assert (await client.delete(f"/api/uploads/{upload_id}")).status_code == 200
        assert await keys(moto_s3, bucket) == []


async def test_an_input_missing_from_the_bucket_fails_its_job_naming_the_store(
    standin, make_settings, moto_s3: MotoS3
) -> None:
    bucket = moto_s3.bucket()
    settings = make_settings([standin.url], **s3_settings(moto_s3, bucket))
    async with (
        proxy_server(settings) as proxy,
        httpx.AsyncClient(base_url=proxy.url, timeout=30) as client,
    ):
        upload_id = await upload(client)
        job = await create(client, json={**I2V, "image": upload_id, "start": False})
        key = f"outputs/inputs/{stored_name(job)}"
        await asyncio.to_thread(moto_s3.client().delete_object, Bucket=bucket, Key=key)

        assert (await client.post(f"/api/jobs/{job['id']}/start")).status_code == 200
        final, _ = await follow_job(client, job["id"], {"completed", "failed", "cancelled"}, 30)
        assert final["status"] == "failed"
        assert final["error"].startswith("The image input could not be read: "), final["error"]
        assert f"s3://{bucket}/outputs at {moto_s3.url}" in final["error"]
        assert stored_name(job) in final["error"]
        assert files_in(settings.data_dir / "s3-staging") == []
