"""The native jobs API (seed 000): fields, model ids, filters, paging, conflicts."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from proxy.launcher import free_port
from proxy.settings import Settings
from tests.support import proxy_server


@pytest.fixture
async def client(tmp_path) -> AsyncIterator[httpx.AsyncClient]:
    # No ComfyUI listens there: jobs wait in the queue, model presence is unknown.
    settings = Settings(data_dir=tmp_path, comfyui_urls=[f"http://127.0.0.1:{free_port()}"])
    async with proxy_server(settings) as proxy:
        async with httpx.AsyncClient(base_url=proxy.url, timeout=10) as http:
            yield http


async def test_the_seed_body_maps_onto_the_workflow(client):
    body = {
        "model_id": "Wan-AI/Wan2.1-T2V-1.3B-Diffusers",
        "prompt": "A curious raccoon",
        "num_inference_steps": 6,
        "num_frames": 81,
        "height": 480,
        "width": 832,
        "guidance_scale": 1.5,
        "seed": 1024,
        "num_gpus": 1,
    }
    job = (await client.post("/api/jobs", json=body)).json()
    assert job["model_id"] == "fastwan_t2v" and job["status"] == "queued"
    params = job["params"]
    assert (params["steps"], params["length"], params["cfg"], params["seed"]) == (6, 81, 1.5, 1024)
    assert (params["width"], params["height"]) == (832, 480)
    assert job["attempt"] == 1 and job["video_url"] is None


async def test_an_unserved_model_is_a_422_listing_the_served_ones(client):
    r = await client.post("/api/jobs", json={"model_id": "Lightricks/LTX-Video", "prompt": "x"})
    assert r.status_code == 422 and r.json()["field"] == "model_id"
    assert (
        "fastwan_t2v" in r.json()["error"]
        and "Wan-AI/Wan2.1-T2V-1.3B-Diffusers" in r.json()["error"]
    )


async def test_bad_fields_name_themselves(client):
    for body, field in (
        ({"prompt": "x", "num_frames": 80}, "num_frames"),  # the name the client sent
        ({"prompt": "x", "width": 100}, "width"),
        ({"prompt": "x", "num_gpus": 0}, "num_gpus"),
        ({"prompt": "x", "stepz": 3}, "stepz"),
        ({"prompt": "x", "params": {"shift": -1}}, "shift"),
    ):
        r = await client.post("/api/jobs", json=body)
        assert r.status_code == 422 and r.json()["field"] == field, (body, r.json())


async def test_list_is_newest_first_with_filters_and_paging(client):
    ids = []
    for i in range(5):
        body = {"prompt": f"job {i}", "start": i % 2 == 0}
        ids.append((await client.post("/api/jobs", json=body)).json()["id"])
    listed = (await client.get("/api/jobs")).json()
    assert [j["id"] for j in listed["jobs"]] == ids[::-1] and listed["total"] == 5
    page = (await client.get("/api/jobs", params={"limit": 2, "offset": 1})).json()
    assert [j["id"] for j in page["jobs"]] == [ids[3], ids[2]]
    pending = (await client.get("/api/jobs", params={"status": "pending"})).json()
    assert {j["id"] for j in pending["jobs"]} == {ids[1], ids[3]} and pending["total"] == 2
    r = await client.get("/api/jobs", params={"status": "sleeping"})
    assert r.status_code == 422 and r.json()["field"] == "status"


async def test_start_and_stop_follow_the_lifecycle(client):
    job = (await client.post("/api/jobs", json={"prompt": "x", "start": False})).json()
    assert job["status"] == "pending" and job["attempt"] == 0
    assert (await client.get(f"/api/jobs/{job['id']}/video")).status_code == 409
    started = (await client.post(f"/api/jobs/{job['id']}/start")).json()
    assert started["status"] == "queued" and started["attempt"] == 1
    again = await client.post(f"/api/jobs/{job['id']}/start")
    assert again.status_code == 409 and again.json()["status"] == "queued"
    stopped = (await client.post(f"/api/jobs/{job['id']}/stop")).json()
    assert stopped["status"] == "stopped" and stopped["attempts"][0]["status"] == "stopped"
    assert (await client.delete(f"/api/jobs/{job['id']}")).json()["deleted"] is True
    assert (await client.get(f"/api/jobs/{job['id']}")).status_code == 404


async def test_models_describe_parameters_and_say_when_presence_is_unknown(client):
    models = (await client.get("/api/models")).json()
    t2v = next(m for m in models["models"] if m["id"] == "fastwan_t2v")
    params = {p["name"]: p for p in t2v["parameters"]}
    assert params["width"]["default"] == 1280 and params["width"]["multiple_of"] == 32
    assert params["length"]["four_k_plus_1"] is True and params["steps"]["default"] == 8
    assert t2v["ready"] is None  # ComfyUI could not be asked: unknown, not "missing"
    backends = (await client.get("/api/backends")).json()["backends"]
    assert backends[0]["status"] == "down" and backends[0]["gpu_id"] == 0
