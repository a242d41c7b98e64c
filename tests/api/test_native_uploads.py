"""Input files on the native API: multipart create calls, and uploads named by id."""

from __future__ import annotations

import io
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from PIL import Image

from proxy.launcher import free_port
from proxy.settings import Settings
from tests.support import proxy_server


def png_bytes(size: tuple[int, int] = (80, 60)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, (30, 160, 220)).save(buf, format="PNG")
    return buf.getvalue()


@dataclass
class Api:
    client: httpx.AsyncClient
    uploads: Path

    def stored(self) -> list[str]:
        return sorted(p.name for p in self.uploads.iterdir())


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[Api]:
    # No ComfyUI listens there: jobs wait in the proxy's queue with their inputs stored.
    settings = Settings(data_dir=tmp_path, comfyui_urls=[f"http://127.0.0.1:{free_port()}"])
    async with proxy_server(settings) as proxy:
        async with httpx.AsyncClient(base_url=proxy.url, timeout=10) as client:
            yield Api(client, settings.uploads_path)


async def test_a_multipart_create_stores_the_file_with_the_job(api: Api) -> None:
    r = await api.client.post(
        "/api/jobs",
        data={
            "model_id": "fastwan_i2v",
            "prompt": "it moves",
            "num_frames": "9",
            "width": "64",
            "height": "64",
            "params": json.dumps({"shift": 5}),
        },
        files={"image": ("photo.png", png_bytes(), "image/png")},
    )
    assert r.status_code == 201, r.text
    job = r.json()
    assert job["model_id"] == "fastwan_i2v" and job["status"] == "queued"
    assert (job["params"]["length"], job["params"]["shift"]) == (9, 5)
    assert job["params"]["image"].startswith("fastwan_")
    assert job["request"]["image"] == "photo.png"
    assert "inputs" not in job  # stored names are the proxy's, not the client's
    assert len(api.stored()) == 1
    assert (await api.client.delete(f"/api/jobs/{job['id']}")).status_code == 200
    assert api.stored() == []


async def test_a_failed_multipart_create_leaves_nothing_behind(api: Api) -> None:
    png = ("photo.png", png_bytes(), "image/png")
    cases = [
        ({"model_id": "fastwan_i2v", "width": "100"}, {"image": png}, "width"),
        ({"model_id": "fastwan_t2v", "prompt": "x"}, {"image": png}, "image"),  # takes no file
        ({"model_id": "fastwan_i2v"}, {"image": ("a.txt", b"hello " * 20, "text/plain")}, "image"),
        ({"model_id": "fastwan_i2v", "params": "{nope"}, {"image": png}, "params"),
        ({"model_id": "fastwan_i2v"}, {}, "image"),  # required
    ]
    for data, files, field in cases:
        r = await api.client.post("/api/jobs", data=data, files=files or {"x": ("", b"")})
        if not files:
            r = await api.client.post(
                "/api/jobs",
                content=b'--b\r\nContent-Disposition: form-data; name="model_id"\r\n\r\n'
                b"fastwan_i2v\r\n--b--\r\n",
                headers={"content-type": "multipart/form-data; boundary=b"},
            )
        assert r.status_code == 422 and r.json()["field"] == field, (data, r.text)
        assert api.stored() == [], data


async def test_an_upload_is_named_by_id_and_each_job_gets_its_own_copy(api: Api) -> None:
    r = await api.client.post(
        "/api/uploads", params={"kind": "image"}, files={"file": ("p.png", png_bytes(), "x/y")}
    )
    assert r.status_code == 201, r.text
    upload = r.json()
    assert (upload["kind"], upload["format"], upload["width"], upload["height"]) == (
        "image",
        "PNG",
        80,
        60,
    )
    assert "stored" not in upload and upload["original_name"] == "p.png"
    assert (await api.client.get(f"/api/uploads/{upload['id']}")).json()["id"] == upload["id"]

    jobs = []
    for n in range(2):
        body = {"model_id": "fastwan_i2v", "image": upload["id"], "seed": n}
        r = await api.client.post("/api/jobs", json=body)
        assert r.status_code == 201, r.text
        jobs.append(r.json())
    assert jobs[0]["params"]["image"] != jobs[1]["params"]["image"]
    assert len(api.stored()) == 3  # the upload and one hard link per job

    # Deleting the upload leaves the jobs' copies; deleting a job leaves the other's.
    assert (await api.client.delete(f"/api/uploads/{upload['id']}")).status_code == 200
    assert (await api.client.get(f"/api/uploads/{upload['id']}")).status_code == 404
    await api.client.delete(f"/api/jobs/{jobs[0]['id']}")
    assert len(api.stored()) == 1

    r = await api.client.post("/api/jobs", json={"model_id": "fastwan_i2v", "image": "nope"})
    assert r.status_code == 422 and r.json()["field"] == "image"


async def test_upload_ids_are_checked_against_the_parameter_kind(api: Api) -> None:
    r = await api.client.post(
        "/api/uploads", params={"kind": "image"}, files={"file": ("p.png", png_bytes(), "x/y")}
    )
    upload_id = r.json()["id"]
    r = await api.client.post("/api/jobs", json={"model_id": "fastwan_v2v", "video": upload_id})
    assert r.status_code == 422 and r.json()["field"] == "video"
    assert "image, not video" in r.json()["error"]
    r = await api.client.post(
        "/api/uploads", params={"kind": "video"}, files={"file": ("p.png", png_bytes(), "x/y")}
    )
    assert r.status_code == 422 and r.json()["field"] == "file"
    r = await api.client.post("/api/uploads", files={"file": ("p.png", png_bytes(), "x/y")})
    assert r.status_code == 422 and r.json()["field"] == "kind"


async def test_the_create_call_documents_both_bodies(api: Api) -> None:
    spec = (await api.client.get("/openapi.json")).json()
    content = spec["paths"]["/api/jobs"]["post"]["requestBody"]["content"]
    assert {"application/json", "multipart/form-data"} <= set(content)
    props = content["application/json"]["schema"]["properties"]
    assert {"model_id", "num_inference_steps", "num_frames", "guidance_scale", "sampler"} <= set(
        props
    )
    assert "/api/uploads" in spec["paths"]
