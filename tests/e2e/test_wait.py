"""One call that waits (issue 15): `Prefer: wait=N` / `?wait=N` on create calls and status
reads, end to end on the stand-in (step time 0.05 s: a small job ends in well under 2 s)."""

from __future__ import annotations

import httpx
import pytest

from proxy.testing import follow_job
from tests.e2e.conftest import SMALL

NATIVE_SMALL = {"width": 64, "height": 64, "num_frames": 9, "num_inference_steps": 4}


async def test_a_job_that_ends_within_the_wait_is_answered_whole(client):
    answer = await client.post(
        "/generate", json={"prompt": "wait for me", **SMALL}, headers={"Prefer": "wait=30"}
    )
    assert answer.status_code == 200, answer.text
    assert answer.headers["preference-applied"] == "wait=30"
    body = answer.json()
    assert body["status"] == "completed" and body["video_ready"] is True
    video = await client.get(body["download_url"])
    assert video.status_code == 200 and video.content[4:8] == b"ftyp"

    native = await client.post("/api/jobs?wait=30", json={"prompt": "native", **NATIVE_SMALL})
    assert native.status_code == 200 and native.json()["status"] == "completed"
    assert native.json()["video_url"] == f"{client.base_url}/api/jobs/{native.json()['id']}/video"


async def test_a_job_still_running_when_the_wait_ends_is_a_202_with_its_location(client):
    slow = {"prompt": "slow", **SMALL, "steps": 60}  # 3 s of sampling
    answer = await client.post(
        "/generate", json=slow, headers={"Prefer": "respond-async, wait=0.3"}
    )
    assert answer.status_code == 202, answer.text
    job_id = answer.json()["job_id"]
    assert answer.headers["location"] == f"{client.base_url}/status/{job_id}"
    assert int(answer.headers["retry-after"]) > 0
    assert answer.json()["status"] in ("queued", "processing")

    # A status read that waits answers once the state changes (queued → running → ...).
    before = (await client.get(f"/api/jobs/{job_id}")).json()["status"]
    later = (await client.get(f"/api/jobs/{job_id}?wait=30")).json()
    assert later["status"] != before or later["status"] == "completed"
    final, _ = await follow_job(client, job_id, {"completed", "failed"})
    assert final["status"] == "completed"
    # Finished: a waiting read answers at once.
    again = await client.get(f"/status/{job_id}", headers={"Prefer": "wait=600"})
    assert again.json()["status"] == "completed"


async def test_a_client_that_gives_up_does_not_stop_the_job(client, proxy):
    async with httpx.AsyncClient(base_url=proxy.url, timeout=0.5) as impatient:
        with pytest.raises(httpx.ReadTimeout):
            await impatient.post(
                "/generate",
                json={"prompt": "left behind", **SMALL, "steps": 30},
                headers={"Prefer": "wait=60"},
            )
    [job] = (await client.get("/api/jobs")).json()["jobs"]
    final, _ = await follow_job(client, job["id"], {"completed", "failed", "stopped"})
    assert final["status"] == "completed"


@pytest.mark.parametrize(
    ("how", "field"),
    [({"params": {"wait": "soon"}}, "wait"), ({"headers": {"Prefer": "wait=-1"}}, "Prefer")],
)
async def test_a_wait_that_is_not_seconds_is_refused_before_any_job(client, how, field):
    answer = await client.post("/generate", json={"prompt": "x", **SMALL}, **how)
    assert answer.status_code in (400, 422), answer.text
    assert field in answer.text
    assert (await client.get("/api/jobs")).json()["total"] == 0


async def test_without_the_option_answers_are_unchanged(client):
    answer = await client.post("/generate", json={"prompt": "as before", **SMALL})
    assert answer.status_code == 200
    assert set(answer.json()) == {"job_id", "status", "message", "seed"}
    native = await client.post("/api/jobs", json={"prompt": "as before", **NATIVE_SMALL})
    assert native.status_code == 201 and "preference-applied" not in native.headers


async def test_a_batch_and_the_other_surfaces_wait_the_same_way(client):
    batch = await client.post(
        "/api/video/batch_inference?wait=60",
        json={"prompts": ["one", "two"], **SMALL},
    )
    assert batch.status_code == 200, batch.text
    body = batch.json()
    assert body["status"] == "complete" and body["completed"] == 2, body

    seed2 = await client.post(
        "/api/v1/generate/text-to-video",
        json={"prompt": "wan", "width": 64, "height": 64, "num_frames": 9},
        headers={"Prefer": "wait=60"},
    )
    assert seed2.status_code == 200, seed2.text
    assert seed2.json()["status"] == "completed" and seed2.json()["output_url"]

    single = await client.post(
        "/api/video/single_inference?wait=0",
        json={"prompt": "not yet", **SMALL},
    )
    assert single.status_code == 202
    location = f"{client.base_url}/api/video/status/{single.json()['job_id']}"
    assert single.headers["location"] == location
