"""Several proxy replicas on one PostgreSQL, end to end: real `python -m proxy serve`
processes sharing a schema, three stand-in ComfyUIs and a moto S3 bucket (see
`tests.e2e.replicas_support`). Each backend is driven by exactly one replica; a replica
SIGKILLed mid-batch hands its backends over within the lease and nothing runs twice; events,
wait mode, downloads, zips and webhooks work from any replica. Every wait is bounded."""

from __future__ import annotations

import asyncio
import io
import time
import zipfile
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest

from proxy.testing import job_views
from tests.e2e.conftest import SMALL
from tests.e2e.replicas_support import (
    BACKENDS,
    LEASE_TTL_S,
    NATIVE,
    TAKEOVER_MARGIN_S,
    WAIT_S,
    Cluster,
    Replica,
    assert_ran_once,
    cluster,
    pg_schema,
    until,
)
from tests.webhooks.conftest import serving

__all__ = ["cluster", "pg_schema"]  # the fixtures this module uses

pytestmark = pytest.mark.postgres


async def create_spread(
    replicas: list[Replica], count: int, prompt: str, **extra: Any
) -> list[str]:
    """`count` jobs created at once, round robin over `replicas` (a load balancer's way)."""
    made = await asyncio.gather(
        *(
            replicas[i % len(replicas)].create(f"{prompt} {i}", seed=i + 1, **extra)
            for i in range(count)
        )
    )
    return [job["id"] for job in made]


@asynccontextmanager
async def recording(replica: Replica, path: str = "/api/events") -> AsyncIterator[list[Any]]:
    """An SSE client of `replica` in the background: (monotonic arrival, job view) of every
    event, appended as it arrives; subscribed before the block runs."""
    seen: list[tuple[float, dict[str, Any]]] = []
    opened = asyncio.Event()

    async def read() -> None:
        timeout = httpx.Timeout(WAIT_S, connect=10)
        async with replica.client.stream("GET", path, timeout=timeout) as stream:
            assert stream.status_code == 200
            opened.set()
            async for view in job_views(stream.aiter_lines()):
                seen.append((time.monotonic(), view))

    task = asyncio.create_task(read())
    try:
        await until(
            lambda: asyncio.sleep(0, result=opened.is_set() or task.done()), 15, f"{path} open"
        )
        if task.done():
            task.result()
        yield seen
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_two_replicas_own_each_backend_once_and_a_batch_runs_on_all_three(
    cluster: Cluster,
) -> None:
    a, b = await asyncio.gather(cluster.start("a"), cluster.start("b"))
    for replica in (a, b):
        health = (await replica.client.get("/health")).json()
        assert health.get("replica") == replica.name, health
    owners = await cluster.spread_owners()
    assert set(owners.values()) == {"a", "b"}, owners
    for replica in (a, b):
        rows = await replica.backends()
        assert all(row.get("lease_expires_at") for row in rows), rows
        listed = (await replica.client.get("/api/replicas")).json()["replicas"]
        assert {r["id"] for r in listed} == {"a", "b"}, listed
        for entry in listed:
            mine = sorted(url for url, owner in owners.items() if owner == entry["id"])
            assert sorted(entry["backends"]) == mine, (entry, owners)
        # A replica is ready whether or not it drives a backend: it takes jobs all the same.
        ready = await replica.client.get("/ready")
        assert ready.status_code == 200, (replica.name, ready.text)

    ids = await create_spread([a, b], 12, "a batch across replicas")
    jobs = await cluster.wait_ended(a, ids)
    assert {j["status"] for j in jobs.values()} == {"completed"}, jobs
    assert {j["backend"] for j in jobs.values()} == set(cluster.urls)
    seen_by_b = await b.jobs(ids)
    assert {i: j["status"] for i, j in seen_by_b.items()} == dict.fromkeys(ids, "completed")
    assert_ran_once(cluster, ids)
    # Nothing moved meanwhile: leases were renewed, not lost.
    assert await cluster.settled_owners() == owners


@pytest.mark.timeout(240)
async def test_a_replica_killed_mid_batch_hands_its_backends_over_and_nothing_runs_twice(
    cluster: Cluster,
) -> None:
    a, b = await asyncio.gather(cluster.start("a"), cluster.start("b"))
    owners = await cluster.spread_owners()
    victim_id, _ = Counter(owners.values()).most_common(1)[0]
    victim, survivor = (a, b) if victim_id == "a" else (b, a)
    theirs = {url for url, owner in owners.items() if owner == victim.name}
    await cluster.set_step_seconds(0.25)  # about 1.2 s a job: a batch of several seconds

    ids = await create_spread([a, b], 12, "killed mid-batch")

    async def running_on_each() -> dict[str, dict[str, Any]] | None:
        jobs = await survivor.jobs(ids)
        running = {i: j for i, j in jobs.items() if j["status"] == "running"}
        if {j["backend"] for j in running.values() if j["backend"] in theirs} != theirs:
            return None
        return {i: j for i, j in running.items() if j["backend"] in theirs}

    at_kill = await until(running_on_each, WAIT_S, f"a job running on each of {sorted(theirs)}")
    await victim.kill()
    print(f"killed {victim.name} (owning {sorted(theirs)}) with {len(at_kill)} jobs running there")
    killed_at = time.monotonic()

    await cluster.settled_owners(
        lambda o: set(o.values()) == {survivor.name},
        timeout_s=LEASE_TTL_S + TAKEOVER_MARGIN_S,
        what=f"{survivor.name} owning all {BACKENDS} backends after {victim.name} was killed",
    )
    print(f"takeover after {time.monotonic() - killed_at:.2f} s (lease {LEASE_TTL_S:g} s)")

    jobs = await cluster.wait_ended(survivor, ids)
    assert {i: j["status"] for i, j in jobs.items()} == dict.fromkeys(ids, "completed"), {
        i: (j["status"], j["error"]) for i, j in jobs.items()
    }
    # Re-attached, not resubmitted: the same prompt, in the same first attempt.
    for job_id, before in at_kill.items():
        after = jobs[job_id]
        assert after["prompt_id"] == before["prompt_id"], (job_id, before, after)
        assert after["backend"] == before["backend"]
        assert len(after["attempts"]) == 1 and after["retries"] == 0, after["attempts"]
    assert_ran_once(cluster, ids)


async def test_an_sse_client_on_one_replica_sees_the_progress_of_a_job_run_by_another(
    cluster: Cluster,
) -> None:
    a = await cluster.start("a")
    await cluster.settled_owners(lambda o: set(o.values()) == {"a"}, what="a owning all")
    b = await cluster.start("b")
    await cluster.set_step_seconds(0.2)
    async with recording(a) as on_a, recording(b) as on_b:
        before = await a.owners()
        ids = await create_spread([b], BACKENDS, "watched from elsewhere", num_inference_steps=8)
        await cluster.wait_ended(b, ids)
        after = await a.owners()
        await until(
            lambda: asyncio.sleep(0, result=all(_status_seen(on_b, i, "completed") for i in ids)),
            5,
            "b's stream showing every job completed",
        )
    jobs = await b.jobs(ids)
    run_by_a = [i for i, j in jobs.items() if before[j["backend"]] == after[j["backend"]] == "a"]
    assert run_by_a, f"no job ran on a backend a owned throughout: {before} {after} {jobs}"
    for job_id in run_by_a:
        steps_a = _first_arrivals(on_a, job_id)
        steps_b = _first_arrivals(on_b, job_id)
        assert len(steps_a) >= 4, f"a itself showed too few steps of {job_id}: {steps_a}"
        missing = sorted(set(steps_a) - set(steps_b))
        assert not missing, f"b never showed steps {missing} of {job_id} (a did)"
        lags = {s: round(steps_b[s] - steps_a[s], 3) for s in steps_a}
        print(f"job {job_id}: b's lag behind a per step (s): {lags}")
        late = {s: lag for s, lag in lags.items() if lag > 1}
        assert not late, f"b showed these steps of {job_id} over a second after a: {late}"


def _status_seen(seen: list[tuple[float, dict[str, Any]]], job_id: str, status: str) -> bool:
    return any(view["id"] == job_id and view["status"] == status for _, view in seen)


def _first_arrivals(seen: list[tuple[float, dict[str, Any]]], job_id: str) -> dict[int, float]:
    """Sampler step -> when an event first showed the job at that step (or past it)."""
    firsts: dict[int, float] = {}
    for at, view in seen:
        step = view.get("step")
        if view["id"] != job_id or view["status"] != "running" or not isinstance(step, int):
            continue
        for s in range(1, step + 1):
            firsts.setdefault(s, at)
    return firsts


async def test_outputs_are_in_the_bucket_and_download_and_zip_from_either_replica(
    cluster: Cluster,
) -> None:
    a, b = await asyncio.gather(cluster.start("a"), cluster.start("b"))
    await cluster.spread_owners()
    prompts = [f"stored once, served twice {i}" for i in range(4)]
    r = await a.client.post("/api/video/batch_inference", json={"prompts": prompts, **SMALL})
    assert r.status_code == 200, r.text
    batch_id = r.json()["batch_id"]

    async def batch_done() -> dict[str, Any] | None:
        status = (await b.client.get(f"/api/video/batch_status/{batch_id}")).json()
        return status if status["status"] in ("complete", "failed", "partial") else None

    status = await until(batch_done, WAIT_S, f"batch {batch_id} done, as b sees it", 0.2)
    assert status["status"] == "complete", status
    ids = [j["job_id"] for j in status["jobs"]]
    keys = await asyncio.to_thread(cluster.moto.keys, cluster.bucket)
    assert keys == sorted(f"outputs/{i}.mp4" for i in ids)
    bodies = {
        i: await asyncio.to_thread(cluster.moto.body, cluster.bucket, f"outputs/{i}.mp4")
        for i in ids
    }
    for replica in (a, b):
        for job_id, stored in bodies.items():
            video = f"/api/jobs/{job_id}/video"
            whole = await replica.client.get(video, follow_redirects=True)
            assert whole.status_code == 200 and whole.content == stored, (replica.name, job_id)
            part = await replica.client.get(
                video, headers={"Range": "bytes=10-99"}, follow_redirects=True
            )
            assert part.status_code == 206, (replica.name, part.text)
            assert part.content == stored[10:100]
            assert part.headers["content-range"] == f"bytes 10-99/{len(stored)}"
        async with replica.client.stream("GET", f"/api/video/batch_download/{batch_id}") as stream:
            assert stream.status_code == 200 and stream.headers["content-type"] == "application/zip"
            archive_bytes = b"".join([chunk async for chunk in stream.aiter_bytes()])
        assert int(stream.headers["content-length"]) == len(archive_bytes)
        with zipfile.ZipFile(io.BytesIO(archive_bytes)) as archive:
            assert archive.testzip() is None
            names = [f"job_{i}_{job_id}.mp4" for i, job_id in enumerate(ids)]
            assert archive.namelist() == names
            for name, job_id in zip(names, ids, strict=True):
                assert archive.read(name) == bodies[job_id], (replica.name, name)
        outputs = replica.data_dir / "outputs"
        assert not outputs.exists() or not any(p.is_file() for p in outputs.rglob("*"))
    assert_ran_once(cluster, ids)


async def test_a_webhook_is_delivered_exactly_once_with_two_replicas(cluster: Cluster) -> None:
    a, b = await asyncio.gather(cluster.start("a"), cluster.start("b"))
    await cluster.spread_owners()
    async with serving() as receiver:
        ids = await create_spread(
            [a, b], 4, "called back once", webhook_url=f"{receiver.url}/hooks/once"
        )
        jobs = await cluster.wait_ended(b, ids)
        assert {j["status"] for j in jobs.values()} == {"completed"}
        await receiver.wait_for(len(ids), lambda r: r.path == "/hooks/once")
        # A barrier, not a sleep: one more job through each replica, delivered after the
        # others; a second delivery of any earlier one would have raced its first by then.
        for replica in (a, b):
            sentinel = await replica.create("the last one", webhook_url=f"{receiver.url}/last")
            await cluster.wait_ended(replica, [sentinel["id"]])
            await receiver.wait_for(1, lambda r, i=sentinel["id"]: r.payload["data"]["id"] == i)

        calls = [r for r in receiver.received if r.path == "/hooks/once"]
        per_job = Counter(r.payload["data"]["id"] for r in calls)
        assert per_job == dict.fromkeys(ids, 1), per_job
        assert {r.payload["type"] for r in calls} == {"job.completed"}
        assert len({r.id for r in calls}) == len(calls)
        for replica in (a, b):
            for job_id in ids:
                rows = (await replica.client.get(f"/api/jobs/{job_id}/webhooks")).json()
                (row,) = rows["deliveries"]
                assert row["status"] == "delivered" and row["attempts"] == 1, (replica.name, row)


async def test_wait_mode_on_one_replica_answers_a_job_run_by_another(cluster: Cluster) -> None:
    await cluster.start("a")
    await cluster.settled_owners(lambda o: set(o.values()) == {"a"}, what="a owning all")
    b = await cluster.start("b")
    before = await b.owners()
    answers = await asyncio.gather(
        *(
            b.client.post(
                "/api/jobs", params={"wait": 30}, json={"prompt": f"waited for {i}", **NATIVE}
            )
            for i in range(BACKENDS)
        )
    )
    after = await b.owners()
    for answer in answers:
        assert answer.status_code == 200, answer.text
        assert answer.json()["status"] == "completed", answer.json()
        assert answer.json()["video_url"]
    jobs = [answer.json() for answer in answers]
    by_a = [j for j in jobs if before[j["backend"]] == after[j["backend"]] == "a"]
    assert by_a, f"no job ran on a backend a owned throughout: {before} {after}"
    print(f"{len(by_a)} of {len(jobs)} waited-for jobs ran on backends a owned throughout")
    assert_ran_once(cluster, [j["id"] for j in jobs])
