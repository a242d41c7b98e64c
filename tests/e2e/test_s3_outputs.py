"""Outputs in an S3-compatible bucket, end to end: the proxy on a loopback port in front of the
stand-in ComfyUI, moto's S3 server on another. Outputs land in the bucket (not on disk),
download by redirect to a presigned URL or streamed through the proxy (Range both ways),
survive a restart, zip and join from the bucket, go when their job goes; a store that is down
is a 503 that says which store and what to check. Every wait is bounded."""

from __future__ import annotations

import asyncio
import io
import zipfile
from pathlib import Path
from typing import Any

import httpx
import pytest

from proxy.media.probe import probe_video_sync
from tests.e2e.conftest import SMALL
from tests.e2e.test_batches_scenes import SCENES, follow_ws
from tests.media.test_s3_store import CREDENTIALS, REGION, MotoS3
from tests.support import follow_job, proxy_server

WAIT_S = 90.0
NATIVE = {"width": 64, "height": 64, "num_frames": 9, "num_inference_steps": 4, "fps": 8}


def s3_settings(moto: MotoS3, bucket: str, **kw: Any) -> dict[str, Any]:
    return {
        "output_store": f"s3://{bucket}/outputs",
        "s3_endpoint_url": moto.url,
        "aws_region": REGION,
        **CREDENTIALS,
        **kw,
    }


async def keys(moto: MotoS3, bucket: str) -> list[str]:
    return await asyncio.to_thread(moto.keys, bucket)


async def body(moto: MotoS3, bucket: str, key: str) -> bytes:
    return await asyncio.to_thread(moto.body, bucket, key)


async def finished_job(client: httpx.AsyncClient, prompt: str) -> str:
    r = await client.post("/api/jobs", json={"prompt": prompt, **NATIVE})
    assert r.status_code in (200, 201), r.text
    job_id = r.json()["id"]
    final, _ = await follow_job(client, job_id, {"completed", "failed", "cancelled"}, WAIT_S)
    assert final["status"] == "completed", final
    return str(job_id)


def local_outputs(settings_path: Path) -> list[Path]:
    return [p for p in settings_path.rglob("*") if p.is_file()] if settings_path.exists() else []


async def test_outputs_land_in_the_bucket_and_download_by_redirect_or_streamed_with_range(
    standin, make_settings, moto_s3, tmp_path
):
    bucket = moto_s3.bucket()
    settings = make_settings([standin.url], **s3_settings(moto_s3, bucket))
    async with (
        proxy_server(settings) as proxy,
        httpx.AsyncClient(base_url=proxy.url, timeout=30) as client,
    ):
        job_id = await finished_job(client, "a red kite over a beach")
        key = f"outputs/{job_id}.mp4"
        assert await keys(moto_s3, bucket) == [key]
        assert local_outputs(settings.outputs_path) == [], "an output was kept on local disk"
        assert not any(p.is_file() for p in (settings.data_dir / "s3-staging").rglob("*"))
        stored = await body(moto_s3, bucket, key)
        path = tmp_path / "stored.mp4"
        path.write_bytes(stored)
        assert probe_video_sync(path)["frames"] == 9

        video = f"/api/jobs/{job_id}/video"
        r = await client.get(video)
        assert r.status_code == 307, r.text
        assert r.headers["location"].startswith(f"{moto_s3.url}/{bucket}/{key}?")
        assert "X-Amz-Signature=" in r.headers["location"]
        followed = await client.get(video, follow_redirects=True)
        assert followed.status_code == 200 and followed.content == stored
        assert followed.headers["content-type"] == "video/mp4"
        ranged = await client.get(video, headers={"Range": "bytes=10-99"}, follow_redirects=True)
        assert ranged.status_code == 206 and ranged.content == stored[10:100]
        assert ranged.headers["content-range"] == f"bytes 10-99/{len(stored)}"
        # Seed 001's download: an attachment, also when the store sends the bytes.
        download = await client.get(f"/download/{job_id}", follow_redirects=True)
        assert download.content == stored
        assert f'attachment; filename="{job_id}.mp4"' == download.headers["content-disposition"]

    # A restart (same database, same bucket), now streaming through the proxy.
    streaming = settings.model_copy(update={"s3_proxy_downloads": True})
    async with (
        proxy_server(streaming) as proxy,
        httpx.AsyncClient(base_url=proxy.url, timeout=30) as client,
    ):
        whole = await client.get(video)
        assert whole.status_code == 200 and whole.content == stored
        assert whole.headers["content-length"] == str(len(stored))
        assert whole.headers["accept-ranges"] == "bytes"
        assert whole.headers["content-disposition"] == f'inline; filename="{job_id}.mp4"'
        for header, first, last in (
            ("bytes=10-99", 10, 99),
            ("bytes=0-0", 0, 0),
            ("bytes=-50", len(stored) - 50, len(stored) - 1),
            (f"bytes={len(stored) - 7}-", len(stored) - 7, len(stored) - 1),
        ):
            part = await client.get(video, headers={"Range": header})
            assert part.status_code == 206, (header, part.text)
            assert part.content == stored[first : last + 1], header
            assert part.headers["content-range"] == f"bytes {first}-{last}/{len(stored)}"
            assert part.headers["content-length"] == str(last - first + 1)
        past = await client.get(video, headers={"Range": f"bytes={len(stored)}-"})
        assert past.status_code == 416
        assert past.headers["content-range"] == f"bytes */{len(stored)}"
        stale = await client.get(video, headers={"Range": "bytes=0-9", "If-Range": '"other"'})
        assert stale.status_code == 200 and stale.content == stored
        etag = whole.headers["etag"]
        fresh = await client.get(video, headers={"Range": "bytes=0-9", "If-Range": etag})
        assert fresh.status_code == 206 and fresh.content == stored[:10]
        # The Wan2.1 surface's /outputs/<file> reads the same object.
        assert (await client.get(f"/outputs/{job_id}.mp4")).content == stored

        r = await client.delete(f"/api/jobs/{job_id}")
        assert r.status_code == 200, r.text
        assert await keys(moto_s3, bucket) == []
        assert (await client.get(video)).status_code == 404


async def test_a_batch_zips_from_the_bucket_and_deleting_it_removes_its_objects(
    standin, make_settings, moto_s3
):
    bucket = moto_s3.bucket()
    settings = make_settings([standin.url], **s3_settings(moto_s3, bucket))
    async with (
        proxy_server(settings) as proxy,
        httpx.AsyncClient(base_url=proxy.url, timeout=30) as client,
    ):
        prompts = [f"prompt number {i}" for i in range(3)]
        r = await client.post("/api/video/batch_inference", json={"prompts": prompts, **SMALL})
        assert r.status_code == 200, r.text
        batch_id = r.json()["batch_id"]
        seen, code = await follow_ws(
            proxy.url.replace("http://", "ws://") + f"/api/ws/batch/{batch_id}", WAIT_S
        )
        assert code == 1000 and seen[-1]["status"] == "complete", seen[-1]
        ids = [j["job_id"] for j in seen[-1]["jobs"]]
        assert await keys(moto_s3, bucket) == sorted(f"outputs/{i}.mp4" for i in ids)

        r = await client.get(f"/api/video/batch_download/{batch_id}")
        assert r.status_code == 200 and r.headers["content-type"] == "application/zip"
        assert int(r.headers["content-length"]) == len(r.content)
        with zipfile.ZipFile(io.BytesIO(r.content)) as archive:
            assert archive.testzip() is None
            assert archive.namelist() == [f"job_{i}_{job_id}.mp4" for i, job_id in enumerate(ids)]
            for i, job_id in enumerate(ids):
                member = archive.read(f"job_{i}_{job_id}.mp4")
                assert member == await body(moto_s3, bucket, f"outputs/{job_id}.mp4")
        assert local_outputs(settings.outputs_path) == []

        r = await client.delete(f"/api/batches/{batch_id}")
        assert r.status_code == 200, r.text
        assert await keys(moto_s3, bucket) == []


async def test_scenes_join_from_the_bucket_into_the_bucket(
    standin, make_settings, moto_s3, tmp_path
):
    bucket = moto_s3.bucket()
    settings = make_settings([standin.url], **s3_settings(moto_s3, bucket, s3_proxy_downloads=True))
    async with (
        proxy_server(settings) as proxy,
        httpx.AsyncClient(base_url=proxy.url, timeout=60) as client,
    ):
        session = await client.post("/api/session", json={"scenes": SCENES, **SMALL})
        r = await client.post(
            "/api/videos/generate-scenes", json={"session_id": session.json()["session_id"]}
        )
        batch_id = r.json()["job_id"]
        _, code = await follow_ws(
            proxy.url.replace("http://", "ws://") + f"/api/ws/batch/{batch_id}", WAIT_S
        )
        assert code == 1000
        final = await client.get(f"/api/videos/final/{batch_id}")
        assert final.status_code == 200, final.text
        name = (await client.get(f"/api/batches/{batch_id}")).json()["final"]["filename"]
        assert f"outputs/{name}" in await keys(moto_s3, bucket)
        assert final.content == await body(moto_s3, bucket, f"outputs/{name}")
        path = tmp_path / "final.mp4"
        path.write_bytes(final.content)
        assert probe_video_sync(path)["frames"] == 4 * 9
        again = await client.get(f"/api/videos/final/{batch_id}", headers={"Range": "bytes=0-9"})
        assert again.status_code == 206 and again.content == final.content[:10]
        assert local_outputs(settings.outputs_path) == []
        assert not any(p.is_file() for p in (settings.data_dir / "s3-staging").rglob("*"))


async def test_a_store_that_is_down_is_a_503_naming_it_and_what_to_check(
    standin, make_settings, moto_s3, tmp_path
):
    bucket = moto_s3.bucket()
    settings = make_settings([standin.url], **s3_settings(moto_s3, bucket))
    async with (
        proxy_server(settings) as proxy,
        httpx.AsyncClient(base_url=proxy.url, timeout=60) as client,
    ):
        job_id = await finished_job(client, "stored before the outage")
        moto_s3.stop()

        for method, path in (
            ("GET", f"/api/jobs/{job_id}/video"),
            ("GET", f"/download/{job_id}"),
            ("DELETE", f"/api/jobs/{job_id}"),
        ):
            r = await client.request(method, path)
            assert r.status_code == 503, (path, r.text)
            assert r.headers["retry-after"] == "5"  # a client knows when to ask again
            error = r.json()["error"]
            assert f"s3://{bucket}/outputs at {moto_s3.url}" in error, error
            assert "cannot be reached" in error and "S3_ENDPOINT_URL" in error
            assert "Traceback" not in r.text and str(tmp_path) not in r.text
        # The job was not deleted: its objects could not be.
        assert (await client.get(f"/api/jobs/{job_id}")).status_code == 200

        # A job that ends meanwhile fails with the reason, not "internal error".
        r = await client.post("/api/jobs", json={"prompt": "during the outage", **NATIVE})
        failed, _ = await follow_job(
            client, r.json()["id"], {"completed", "failed", "cancelled"}, WAIT_S
        )
        assert failed["status"] == "failed", failed
        assert "could not be stored" in failed["error"] and "S3_ENDPOINT_URL" in failed["error"]
        assert not any(p.is_file() for p in (settings.data_dir / "s3-staging").rglob("*"))


@pytest.mark.parametrize("proxy_downloads", [False, True])
async def test_a_missing_bucket_is_a_502_that_says_so(
    standin, make_settings, moto_s3, proxy_downloads
):
    settings = make_settings(
        [standin.url],
        **s3_settings(moto_s3, "bucket-nobody-made", s3_proxy_downloads=proxy_downloads),
    )
    async with (
        proxy_server(settings) as proxy,
        httpx.AsyncClient(base_url=proxy.url, timeout=60) as client,
    ):
        r = await client.get("/api/videos/someone.mp4")
        assert r.status_code == 502, r.text
        assert "'bucket-nobody-made'" in r.json()["error"] and "does not exist" in r.json()["error"]
