"""Replicas: jobs per second through one proxy replica vs two, on the same three stand-ins.

`--jobs` small jobs (24, 64x64x9, 4 steps) created at once, round robin over the replicas as a
load balancer would send them, timed from the first POST until every job is seen completed
(one `/api/events` client per replica; a job counts when the first of them shows it). The
stand-ins run as fast as they go by default (`--step-seconds 0`), so what is measured is how
fast the proxies hand jobs to ComfyUI and finish them, not the GPUs.

Baseline: one replica on a fresh PostgreSQL schema. Measured: two replicas on another fresh
schema, once the backends are spread between them (each drives its own; `GET /api/backends`
"owner"). Each phase has warm-up jobs first (one per backend). Reported: jobs/s of each, the
ratio two/one [>= 1.0: a second replica must not slow dispatch down; on the 2-core VM the
stand-ins and the proxies share the two cores, so more is not expected there], each
replica's CPU over the burst, and how many jobs the stand-ins executed more than once [0].

    .venv/bin/python -m bench.replicas [--jobs 24] [--step-seconds 0] [--lease-ttl 3]

Needs PostgreSQL on 127.0.0.1:5432 (database test, user postgres, trust), as the tests do.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx

from bench.common import (
    Child,
    SseEvent,
    check,
    follow,
    header,
    http,
    median,
    percentile,
    proxy_process,
    standin,
)

PG_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/test"
PG_URL = "postgresql+asyncpg://postgres@127.0.0.1:5432/test"
BACKENDS = 3
BODY = {"width": 64, "height": 64, "num_frames": 9, "num_inference_steps": 4, "fps": 8}
RATIO_TARGET = 1.0
SPREAD_TIMEOUT_S = 60.0


@asynccontextmanager
async def fresh_schema() -> AsyncIterator[str]:
    """A DATABASE_URL on a new schema of the local PostgreSQL, dropped afterwards."""
    import asyncpg

    schema = f"bench_{uuid.uuid4().hex[:12]}"
    conn = await asyncio.wait_for(asyncpg.connect(PG_ADMIN_URL), 5)
    try:
        await conn.execute(f'CREATE SCHEMA "{schema}"')
        yield f"{PG_URL}?schema={schema}"
    finally:
        await asyncio.wait_for(conn.execute(f'DROP SCHEMA "{schema}" CASCADE'), 30)
        await conn.close()


async def spread(replicas: list[Child], urls: list[str]) -> dict[str, str]:
    """Backend -> owner once every backend is owned, every replica agrees, and none holds
    more than its share (ceil(backends / replicas))."""
    share = math.ceil(len(urls) / len(replicas))
    deadline = time.monotonic() + SPREAD_TIMEOUT_S
    last: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        views = []
        for replica in replicas:
            async with http(replica.url, 10) as client:
                last = (await client.get("/api/backends")).json()["backends"]
            if any("owner" not in row for row in last):
                raise RuntimeError(f"GET /api/backends names no owner (no replicas here): {last}")
            views.append({row["url"]: row["owner"] for row in last})
        owners = views[0]
        if (
            all(view == owners for view in views)
            and set(owners) == set(urls)
            and all(owners.values())
            and max(Counter(owners.values()).values()) <= share
        ):
            return {url: str(owner) for url, owner in owners.items()}
        await asyncio.sleep(0.2)  # a poll interval, bounded by the deadline
    raise RuntimeError(f"the backends were not spread within {SPREAD_TIMEOUT_S:.0f} s: {last}")


class Completions:
    """One `/api/events` client per replica; when each job was first seen completed."""

    def __init__(self, replicas: list[Child]) -> None:
        self.replicas = replicas
        self.done_at: dict[str, float] = {}
        self.failed: dict[str, str] = {}
        self._changed = asyncio.Event()
        self._clients: list[httpx.AsyncClient] = []
        self._tasks: list[asyncio.Task[None]] = []

    def _on_event(self, event: SseEvent) -> bool:
        job = event.job
        if job.get("status") == "completed":
            self.done_at.setdefault(str(job["id"]), event.t)
            self._changed.set()
        elif job.get("status") in ("failed", "stopped"):
            self.failed[str(job["id"])] = str(job.get("error"))
            self._changed.set()
        return False

    async def __aenter__(self) -> Completions:
        for replica in self.replicas:
            client = http(replica.url, 900)
            self._clients.append(client)
            opened = asyncio.Event()
            task = asyncio.create_task(
                follow(client, "/api/events", self._on_event, opened=opened, timeout_s=900)
            )
            self._tasks.append(task)
            await asyncio.wait_for(opened.wait(), 30)
        return self

    async def __aexit__(self, *exc: object) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for client in self._clients:
            await client.aclose()

    async def wait(self, ids: list[str], timeout_s: float) -> float:
        """Until every job in `ids` is completed (any failure: RuntimeError); the last time."""
        async with asyncio.timeout(timeout_s):
            while True:
                failed = {i: self.failed[i] for i in ids if i in self.failed}
                if failed:
                    raise RuntimeError(f"jobs failed: {failed}")
                if all(i in self.done_at for i in ids):
                    return max(self.done_at[i] for i in ids)
                self._changed.clear()
                await self._changed.wait()


async def burst(replicas: list[Child], count: int, tag: str) -> tuple[float, list[str]]:
    """`count` jobs created at once, round robin; seconds until the last one completed."""
    clients = [http(r.url, 120) for r in replicas]
    try:
        async with Completions(replicas) as completions:
            start = time.monotonic()

            async def create(i: int) -> str:
                body = {"prompt": f"{tag} {i}", "seed": i + 1, **BODY}
                r = await clients[i % len(clients)].post("/api/jobs", json=body)
                if r.status_code not in (200, 201):
                    raise RuntimeError(f"POST /api/jobs: HTTP {r.status_code} {r.text[:300]}")
                return str(r.json()["id"])

            ids = list(await asyncio.gather(*(create(i) for i in range(count))))
            end = await completions.wait(ids, 600)
            return end - start, ids
    finally:
        for client in clients:
            await client.aclose()


@dataclass
class Phase:
    replicas: int
    wall_s: float
    ids: list[str]
    cpu_s: dict[str, float]
    owners: dict[str, str]
    jobs: list[dict[str, Any]]  # the burst's jobs as the API lists them at the end

    @property
    def jobs_per_s(self) -> float:
        return len(self.ids) / self.wall_s

    def waits_ms(self) -> list[float]:
        """Each job's wait in the proxy's queue: created -> handed to a ComfyUI (running)."""
        return [
            1000 * (_at(j["started_at"]) - _at(j["created_at"]))
            for j in self.jobs
            if j.get("started_at")
        ]

    def per_owner(self) -> dict[str, int]:
        """How many of the burst's jobs ran on each replica's backends."""
        return dict(Counter(self.owners.get(j["backend"], "?") for j in self.jobs))

    def run_where_posted(self) -> int:
        """How many jobs ran on a backend of the replica that took their POST (round robin:
        job i went to replica i % replicas)."""
        posted = {job_id: f"r{i % self.replicas + 1}" for i, job_id in enumerate(self.ids)}
        return sum(1 for j in self.jobs if self.owners.get(j["backend"]) == posted[j["id"]])


def _at(stamp: str) -> float:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


async def listed(replica: Child, ids: list[str]) -> list[dict[str, Any]]:
    async with http(replica.url, 30) as client:
        jobs = (await client.get("/api/jobs", params={"limit": 1000})).json()["jobs"]
    wanted = set(ids)
    return [j for j in jobs if j["id"] in wanted]


async def phase(
    urls: list[str], root: Path, count: int, replicas: int, lease_ttl_s: float
) -> Phase:
    names = [f"r{i + 1}" for i in range(replicas)]
    async with fresh_schema() as database_url, AsyncExitStack() as stack:
        children = [
            await stack.enter_async_context(
                proxy_process(
                    urls,
                    root / f"{replicas}-{name}",
                    # A replica that drives no backend yet answers /ready 503 in some builds.
                    ready_path="/health",
                    database_url=database_url,
                    replica_id=name,
                    lease_ttl_s=lease_ttl_s,
                )
            )
            for name in names
        ]
        owners = await spread(children, urls)
        await burst(children, BACKENDS, f"warm-up {replicas}")
        cpu_before = [c.cpu_s() for c in children]
        wall_s, ids = await burst(children, count, f"{replicas} replicas")
        cpu = {
            name: c.cpu_s() - before
            for name, c, before in zip(names, children, cpu_before, strict=True)
        }
        return Phase(replicas, wall_s, ids, cpu, owners, await listed(children[0], ids))


async def executions(urls: list[str]) -> Counter[str]:
    """Job id -> how many times the stand-ins executed it (`GET /_standin/executed`)."""
    runs: Counter[str] = Counter()
    for url in urls:
        async with http(url, 10) as client:
            for run in (await client.get("/_standin/executed")).json()["executed"]:
                for prefix in run["filename_prefixes"]:
                    if prefix.startswith("fastwan/"):
                        runs[prefix.removeprefix("fastwan/")] += 1
    return runs


async def main(count: int, step_s: float, lease_ttl_s: float) -> None:
    header(
        f"bench.replicas: {count} jobs at 64x64x9 over {BACKENDS} stand-ins, 1 replica vs 2",
        f"stand-ins: no timing profile, {step_s:g} s a sampler step (4 steps a job); "
        f"PostgreSQL; LEASE_TTL_S={lease_ttl_s:g}",
    )
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        async with AsyncExitStack() as stack:
            comfies = [
                await stack.enter_async_context(
                    standin(root / f"comfy{i}", step_seconds=step_s, record=False)
                )
                for i in range(BACKENDS)
            ]
            urls = [c.url for c in comfies]
            one = await phase(urls, root, count, 1, lease_ttl_s)
            two = await phase(urls, root, count, 2, lease_ttl_s)
            runs = await executions(urls)
    for result in (one, two):
        cpu = ", ".join(f"{name} {s:.2f} s" for name, s in result.cpu_s.items())
        owned = Counter(result.owners.values())
        print(
            f"  {result.replicas} replica{'s' if result.replicas > 1 else ' '}: "
            f"{len(result.ids)} jobs in {result.wall_s:6.2f} s = {result.jobs_per_s:5.2f} jobs/s"
            f"  (backends owned {dict(owned)}; proxy CPU {cpu})"
        )
        waits = result.waits_ms()
        print(
            f"      queue wait created -> running: median {median(waits):.0f} ms, "
            f"p90 {percentile(waits, 90):.0f} ms, max {max(waits, default=0):.0f} ms; "
            f"jobs run per owner {result.per_owner()}, "
            f"{result.run_where_posted()} on the replica that took the POST"
        )
    ids = one.ids + two.ids
    twice = sum(1 for i in ids if runs[i] > 1)
    never = sum(1 for i in ids if runs[i] == 0)
    check(
        "jobs/s, 2 replicas / 1 replica", two.jobs_per_s / one.jobs_per_s, RATIO_TARGET, below=False
    )
    check("jobs executed more than once by the stand-ins", twice, 0, digits=0)
    if never:
        print(f"  ({never} completed jobs were never seen executed: the record is incomplete)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=24)
    parser.add_argument("--step-seconds", type=float, default=0.0, help="stand-in sampler step")
    parser.add_argument("--lease-ttl", type=float, default=3.0, help="LEASE_TTL_S of each")
    args = parser.parse_args()
    asyncio.run(main(args.jobs, args.step_seconds, args.lease_ttl))
