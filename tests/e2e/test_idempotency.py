"""Safe retries (issue 15): `Idempotency-Key` on create calls, end to end on the stand-in."""

from __future__ import annotations

import asyncio

import httpx

from proxy.settings import Settings
from tests.e2e.conftest import SMALL
from tests.support import proxy_server


async def test_a_retried_create_returns_the_first_job(client):
    body = {"prompt": "only once", **SMALL}
    first = await client.post("/generate", json=body, headers={"Idempotency-Key": "abc-1"})
    again = await client.post("/generate", json=body, headers={"Idempotency-Key": "abc-1"})
    assert first.status_code == again.status_code == 200
    assert again.json() == first.json() and again.headers["idempotent-replayed"] == "true"
    other = await client.post("/generate", json=body, headers={"Idempotency-Key": "abc-2"})
    assert other.json()["job_id"] != first.json()["job_id"]
    assert (await client.get("/api/jobs")).json()["total"] == 2

    changed = await client.post(
        "/generate", json={**body, "seed": 5}, headers={"Idempotency-Key": "abc-1"}
    )
    assert changed.status_code == 422 and changed.json()["field"] == "Idempotency-Key"


async def test_concurrent_duplicates_make_one_job(client):
    body = {"prompt": "a stampede of retries", "width": 64, "height": 64, "num_frames": 9}
    answers = await asyncio.gather(
        *(
            client.post("/api/jobs?wait=0", json=body, headers={"Idempotency-Key": "same"})
            for _ in range(8)
        )
    )
    assert {a.status_code for a in answers} == {answers[0].status_code}, answers
    assert len({a.json()["id"] for a in answers}) == 1
    assert (await client.get("/api/jobs")).json()["total"] == 1


async def test_a_refused_create_can_be_retried_with_the_same_key(client):
    bad = await client.post(
        "/generate", json={"prompt": "x", "width": 1000}, headers={"Idempotency-Key": "k"}
    )
    assert bad.status_code == 422
    good = await client.post(
        "/generate", json={"prompt": "x", "width": 1000}, headers={"Idempotency-Key": "k"}
    )
    assert good.status_code == 422  # refused again, not replayed: nothing was kept
    assert "idempotent-replayed" not in good.headers


async def test_keys_belong_to_the_api_key_that_used_them(standin, make_settings):
    settings: Settings = make_settings([standin.url], api_keys=["alice:ka", "bob:kb"])
    async with proxy_server(settings) as proxy:
        async with httpx.AsyncClient(base_url=proxy.url, timeout=30) as client:
            body = {"prompt": "mine", **SMALL}
            made = [
                await client.post(
                    "/generate", json=body, headers={"Idempotency-Key": "k", "X-API-Key": key}
                )
                for key in ("ka", "kb", "ka")
            ]
    ids = [m.json()["job_id"] for m in made]
    assert ids[0] == ids[2] != ids[1]
