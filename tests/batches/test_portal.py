"""Seed 004 surface on an offline proxy: shapes, vocabulary, validation, the zip, videos by
id, and the websockets (jobs are moved through their lifecycle by the test)."""

from __future__ import annotations

import asyncio
import io
import json
import zipfile

import pytest
import websockets
from websockets.exceptions import ConnectionClosed

from tests.batches.conftest import SMALL

STATUS_ORDER = ["pending", "generating", "processing", "complete"]


async def recv(ws, timeout_s: float = 10.0) -> dict:
    async with asyncio.timeout(timeout_s):
        return json.loads(await ws.recv())


async def recv_until_closed(ws, timeout_s: float = 10.0) -> list[dict]:
    got = []
    async with asyncio.timeout(timeout_s):
        try:
            async for frame in ws:
                got.append(json.loads(frame))
        except ConnectionClosed:
            pass
    return got


async def test_bad_batches_are_refused_naming_the_field_and_create_nothing(offline):
    client = offline.client
    for body, field in (
        ({"prompts": ["a", "b", "c", "d"]}, "prompts"),  # max_batch_size is 3 here
        ({"prompts": []}, "prompts"),
        ({"prompts": ["ok", "  "]}, "prompts.1"),
        ({"prompts": ["a"], "width": 100}, "width"),
        ({"prompts": ["a"], "colour": "red"}, "colour"),
        ({}, "prompts"),
    ):
        r = await client.post("/api/video/batch_inference", json=body)
        assert r.status_code == 422, (body, r.text)
        assert r.json()["field"] == field and field.split(".")[0] in r.json()["error"]
    r = await client.post("/api/video/batch_inference", json={"prompts": ["a"] * 4})
    assert "1 to 3 prompts" in r.json()["error"]
    assert (await client.get("/api/jobs")).json()["total"] == 0
    assert (await client.get("/api/batches")).json()["total"] == 0


async def test_batch_status_vocabulary_counts_and_zip(offline):
    client = offline.client
    prompts = ["a sunset over the sea", "a neon street", "a landing spaceship"]
    r = await client.post("/api/video/batch_inference", json={"prompts": prompts, **SMALL})
    assert r.status_code == 200
    body = r.json()
    assert body["message"] == (
        "Batch processing started for 3 prompts. Connect to WebSocket for updates."
    )
    batch_id = body["batch_id"]

    status = (await client.get(f"/api/video/batch_status/{batch_id}")).json()
    assert status["status"] == "processing" and status["total"] == 3
    assert status["message"] == "Completed: 0/3"
    assert [j["prompt"] for j in status["jobs"]] == prompts
    assert all(
        j["status"] == "pending" and j["gpu_id"] is None and j["video_url"] is None
        for j in status["jobs"]
    )
    ids = [j["job_id"] for j in status["jobs"]]
    native = (await client.get(f"/api/jobs/{ids[0]}")).json()
    assert native["batch_id"] == batch_id and native["params"]["width"] == 64

    r = await client.get(f"/api/video/batch_download/{batch_id}")
    assert r.status_code == 409 and r.json()["status"] == "processing"

    await offline.run(ids[0], stage="storing output", progress=97.0)
    assert (await client.get(f"/api/video/status/{ids[0]}")).json()["status"] == "processing"
    await offline.complete(ids[0])
    await offline.run(ids[1], progress=30.0)
    one = (await client.get(f"/api/video/status/{ids[1]}")).json()
    assert one == {
        "job_id": ids[1],
        "status": "generating",
        "message": "Sampling",
        "progress": 30,
        "video_url": None,
    }
    await offline.fail(ids[1])
    await offline.services.jobs.stop(ids[2])

    status = (await client.get(f"/api/video/batch_status/{batch_id}")).json()
    assert (status["status"], status["completed"], status["failed"]) == ("partial", 1, 2)
    assert status["message"] == "Completed: 1/3"
    words = [(j["status"], j["progress"], j["video_url"]) for j in status["jobs"]]
    assert words == [
        ("complete", 100, f"{client.base_url}/api/videos/{ids[0]}"),
        ("failed", 30, None),
        ("failed", 0, None),
    ]
    assert status["jobs"][0]["message"] == "Video generation complete"
    assert "VAEDecode" in status["jobs"][1]["message"]

    r = await client.get(f"/api/video/batch_download/{batch_id}")
    assert r.status_code == 200 and r.headers["content-type"] == "application/zip"
    assert f'filename="batch_{batch_id}.zip"' in r.headers["content-disposition"]
    assert int(r.headers["content-length"]) == len(r.content)
    with zipfile.ZipFile(io.BytesIO(r.content)) as archive:
        assert archive.testzip() is None
        assert archive.namelist() == [f"job_0_{ids[0]}.mp4"]

    r = await client.get("/api/video/batch_status/nope")
    assert r.status_code == 404 and r.json()["status"] == "not_found"


async def test_single_video_status_and_video_by_id_or_file_name(offline):
    client = offline.client
    r = await client.post("/api/video/single_inference", json={"prompt": "a cat", **SMALL})
    assert r.json()["message"] == "Video generation started. Connect to WebSocket for updates."
    job_id = r.json()["job_id"]
    status = (await client.get(f"/api/video/status/{job_id}")).json()
    assert status["status"] == "pending" and status["video_url"] is None
    assert (await client.get(f"/api/videos/{job_id}")).status_code == 409

    await offline.complete(job_id)
    status = (await client.get(f"/api/video/status/{job_id}")).json()
    assert status == {
        "job_id": job_id,
        "status": "complete",
        "message": "Video generation complete",
        "progress": 100,
        "video_url": f"{client.base_url}/api/videos/{job_id}",
    }
    whole = await client.get(status["video_url"])
    assert whole.status_code == 200 and whole.headers["content-type"] == "video/mp4"
    part = await client.get(status["video_url"], headers={"range": "bytes=0-99"})
    assert part.status_code == 206 and part.content == whole.content[:100]
    by_name = await client.get(f"/api/videos/{job_id}.mp4")
    assert by_name.status_code == 200 and by_name.content == whole.content
    for missing in ("nope", "nope.mp4", "..", ".hidden"):
        assert (await client.get(f"/api/videos/{missing}")).status_code == 404
    r = await client.post("/api/video/single_inference", json={"prompt": ""})
    assert r.status_code == 422 and r.json()["field"] == "prompt"
    assert (await client.get("/api/video/status/nope")).status_code == 404


async def test_video_websocket_sends_every_change_then_closes_1000(offline):
    client = offline.client
    job_id = (
        await client.post("/api/video/single_inference", json={"prompt": "a dog", **SMALL})
    ).json()["job_id"]
    async with websockets.connect(f"{offline.ws_url}/api/ws/video/{job_id}") as ws:
        first = await recv(ws)
        assert first["job_id"] == job_id and first["status"] == "pending"
        await offline.run(job_id, progress=10.0)
        assert (await recv(ws))["status"] == "generating"
        await offline.run(job_id, progress=60.0)
        assert (await recv(ws))["progress"] == 60
        await offline.run(job_id, progress=97.0, stage="storing output")
        assert (await recv(ws))["status"] == "processing"
        await offline.complete(job_id)
        rest = await recv_until_closed(ws)
        assert rest[-1]["status"] == "complete" and rest[-1]["video_url"]
        assert ws.close_code == 1000

    # A finished job: its status at once, then a clean close.
    async with websockets.connect(f"{offline.ws_url}/api/ws/video/{job_id}") as ws:
        assert [m["status"] for m in await recv_until_closed(ws)] == ["complete"]
        assert ws.close_code == 1000

    async with websockets.connect(f"{offline.ws_url}/api/ws/video/nope") as ws:
        got = await recv_until_closed(ws)
        assert got == [{"error": "no job with id 'nope'", "status": "not_found"}]
        assert ws.close_code == 4404


async def _batch(client, prompts: list[str]) -> tuple[str, list[str]]:
    """Submit a batch; its id and its jobs' ids in order."""
    r = await client.post("/api/video/batch_inference", json={"prompts": prompts, **SMALL})
    batch_id = r.json()["batch_id"]
    status = (await client.get(f"/api/video/batch_status/{batch_id}")).json()
    return batch_id, [j["job_id"] for j in status["jobs"]]


async def test_batch_websocket_follows_every_job_in_order_and_closes_1000(offline):
    client = offline.client
    batch_id, ids = await _batch(client, ["a", "b"])
    async with websockets.connect(f"{offline.ws_url}/api/ws/batch/{batch_id}") as ws:
        seen = [await recv(ws)]
        assert seen[0]["status"] == "processing" and seen[0]["total"] == 2
        await offline.run(ids[0])
        await offline.run(ids[1])
        await offline.complete(ids[1])
        await offline.fail(ids[0])
        seen += await recv_until_closed(ws)
        assert ws.close_code == 1000
    assert seen[-1]["status"] == "partial" and seen[-1]["message"] == "Completed: 1/2"
    for index in range(2):
        words = [
            STATUS_ORDER.index(m["jobs"][index]["status"])
            if m["jobs"][index]["status"] in STATUS_ORDER
            else 9
            for m in seen
        ]
        assert words == sorted(words), f"job {index} went backwards: {words}"
    assert all(a != b for a, b in zip(seen, seen[1:], strict=False)), "duplicate frames sent"

    async with websockets.connect(f"{offline.ws_url}/api/ws/batch/nope") as ws:
        got = await recv_until_closed(ws)
        assert got[0]["status"] == "not_found" and ws.close_code == 4404


async def test_a_client_leaving_a_websocket_unsubscribes_it(offline):
    client = offline.client
    job_id = (
        await client.post("/api/video/single_inference", json={"prompt": "a dog", **SMALL})
    ).json()["job_id"]
    bus = offline.services.bus
    before = len(bus._subscribers)
    async with websockets.connect(f"{offline.ws_url}/api/ws/video/{job_id}") as ws:
        await recv(ws)
        assert len(bus._subscribers) >= before + 1
    # The server notices the close and leaves the bus; the next event proves it is gone.
    async with asyncio.timeout(10):
        while len(bus._subscribers) > before:
            await offline.run(job_id, progress=1.0)


@pytest.mark.parametrize("kind", [None, "portal"])
async def test_native_batches_list_get_delete(offline, kind):
    client = offline.client
    first = (
        await client.post("/api/video/batch_inference", json={"prompts": ["x", "y"], **SMALL})
    ).json()["batch_id"]
    second = (
        await client.post("/api/video/batch_inference", json={"prompts": ["z"], **SMALL})
    ).json()["batch_id"]
    params = {"kind": kind} if kind else {}
    listed = (await client.get("/api/batches", params=params)).json()
    assert [b["id"] for b in listed["batches"]] == [second, first] and listed["total"] == 2
    assert listed["batches"][1]["total"] == 2 and listed["batches"][1]["active"] == 2
    assert (await client.get("/api/batches", params={"kind": "scenes"})).json()["total"] == 0

    one = (await client.get(f"/api/batches/{first}")).json()
    assert [i["prompt"] for i in one["items"]] == ["x", "y"]
    ids = [i["job_id"] for i in one["items"]]
    assert one["items"][0]["job"]["status"] == "queued" and one["kind"] == "portal"
    await offline.complete(ids[0])
    stored = offline.services.outputs.path_for(f"{ids[0]}.mp4")
    assert stored.is_file()

    r = await client.delete(f"/api/batches/{first}")
    assert r.status_code == 200 and r.json() == {"id": first, "deleted": True, "jobs_deleted": 2}
    assert not stored.exists()
    for job_id in ids:
        assert (await client.get(f"/api/jobs/{job_id}")).status_code == 404
    assert (await client.get(f"/api/batches/{first}")).status_code == 404
    assert (await client.delete(f"/api/batches/{first}")).status_code == 404
    assert (await client.get("/api/batches")).json()["total"] == 1


async def test_the_endpoints_are_documented(offline):
    paths = (await offline.client.get("/openapi.json")).json()["paths"]
    for path in (
        "/api/video/single_inference",
        "/api/video/status/{job_id}",
        "/api/video/batch_inference",
        "/api/video/batch_status/{batch_id}",
        "/api/video/batch_download/{batch_id}",
        "/api/videos/{video_id}",
        "/api/batches",
        "/api/batches/{batch_id}",
        "/api/session",
        "/api/session/{session_id}",
        "/api/videos/generate-scenes",
        "/api/videos/status/{job_id}",
        "/api/videos/regenerate-scene",
        "/api/videos/final/{job_id}",
    ):
        assert path in paths, path
    assert set(paths["/api/batches/{batch_id}"]) == {"get", "delete"}
    zip_doc = paths["/api/video/batch_download/{batch_id}"]["get"]
    assert "application/zip" in zip_doc["responses"]["200"]["content"]


async def test_a_lost_file_is_left_out_of_the_zip(offline):
    client = offline.client
    batch_id, ids = await _batch(client, ["a", "b"])
    for job_id in ids:
        await offline.complete(job_id, frames=5)
    offline.services.outputs.path_for(f"{ids[0]}.mp4").unlink()
    r = await client.get(f"/api/video/batch_download/{batch_id}")
    with zipfile.ZipFile(io.BytesIO(r.content)) as archive:
        assert archive.namelist() == [f"job_1_{ids[1]}.mp4"]


async def test_batch_websocket_with_a_deleted_job_reports_it_and_follows_the_rest(offline):
    # Regression: a batch with a deleted job crashed its websocket (AttributeError on None).
    client = offline.client
    batch_id, ids = await _batch(client, ["a", "b"])
    assert (await client.delete(f"/api/jobs/{ids[0]}")).status_code == 200
    async with websockets.connect(f"{offline.ws_url}/api/ws/batch/{batch_id}") as ws:
        first = await recv(ws)
        assert first["status"] == "processing"
        assert first["jobs"][0]["status"] == "failed"
        assert first["jobs"][0]["message"] == "The job was deleted"
        await offline.complete(ids[1])
        rest = await recv_until_closed(ws)
        assert ws.close_code == 1000
    assert rest[-1]["status"] == "partial" and rest[-1]["completed"] == 1


async def test_batch_websocket_of_a_batch_whose_jobs_are_all_deleted_ends_at_once(offline):
    client = offline.client
    batch_id, ids = await _batch(client, ["a"])
    assert (await client.delete(f"/api/jobs/{ids[0]}")).status_code == 200
    async with websockets.connect(f"{offline.ws_url}/api/ws/batch/{batch_id}") as ws:
        got = await recv_until_closed(ws)
        assert ws.close_code == 1000
    assert [m["status"] for m in got] == ["failed"]
