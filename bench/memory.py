"""Memory: RSS of the proxy process (VmRSS in /proc/<pid>/status) with 10,000 jobs stored and
500 SSE clients on `/api/events` plus a few on per-job streams [< 200 MB], against its RSS at
idle with the same jobs stored (the baseline), and a bare FastAPI app's for scale.

The proxy (`python -m proxy serve`) runs against a fast stand-in. Readings: idle (after a
warm-up: one job run, the first pages of the job lists read); with every client connected
(each has its `connected` comment); after `--jobs` jobs (3) ran while they all followed (every
event fanned out to all of them); and once they have gone; `--rounds` times (2), so a second
round tells a leak (growing again) from the allocator keeping what it had (flat).

    .venv/bin/python -m bench.memory [--clients 500] [--job-streams 5] [--stored 10000]
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from asyncio import FIRST_COMPLETED
from pathlib import Path

import aiohttp
import httpx

from bench.common import (
    Child,
    Watcher,
    check,
    header,
    http,
    job_body,
    proxy_process,
    rss_bytes,
    standin,
)
from bench.polling import served, store_jobs

TARGET_MB = 200.0
SETTLE_S = 2.0


async def connected_clients(
    url: str, paths: list[str], ready: asyncio.Event, stop: asyncio.Event
) -> int:
    """Open one SSE stream per path; set `ready` once each has sent its first line; read
    (and drop) everything until `stop`. Returns how many events they received in all."""
    received = 0
    opened = 0
    connector = aiohttp.TCPConnector(limit=0)
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=30)
    async with aiohttp.ClientSession(url, connector=connector, timeout=timeout) as session:

        async def client(path: str) -> None:
            nonlocal received, opened
            async with session.get(path) as response:
                response.raise_for_status()
                first = True
                async for line in response.content:
                    if first:
                        first = False
                        opened += 1
                        if opened == len(paths):
                            ready.set()
                    if line.startswith(b"event:"):
                        received += 1

        tasks = [asyncio.create_task(client(p)) for p in paths]
        stopping = asyncio.create_task(stop.wait())
        # Until `stop`, or until a client ends (a stream should not end by itself).
        await asyncio.wait([stopping, *tasks], return_when=asyncio.FIRST_COMPLETED)
        ended = [t for t in tasks if t.done()]
        for task in tasks:
            task.cancel()
        stopping.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if ended:
            first = ended[0].exception() if not ended[0].cancelled() else None
            raise RuntimeError(f"{len(ended)} SSE streams ended early (first: {first!r})")
    return received


async def one_round(
    proxy: Child, client: httpx.AsyncClient, paths: list[str], jobs: int, seed: int
) -> dict[str, float]:
    """Connect every client, run `jobs` jobs while they follow, let them go: RSS readings."""
    readings: dict[str, float] = {}
    ready, stop = asyncio.Event(), asyncio.Event()
    began = time.perf_counter()
    reader = asyncio.create_task(connected_clients(proxy.url, paths, ready, stop))
    await asyncio.wait(
        [reader, asyncio.create_task(ready.wait())], timeout=120, return_when=FIRST_COMPLETED
    )
    if reader.done():
        reader.result()
    if not ready.is_set():
        raise TimeoutError("the SSE clients did not all connect within 120 s")
    readings["connect_s"] = time.perf_counter() - began
    await asyncio.sleep(SETTLE_S)
    readings["connected"] = proxy.rss()
    async with Watcher(client) as watch:
        ids = [
            await watch.submit(job_body((64, 64, 5), seed + n, f"fan-out {seed + n}"))
            for n in range(jobs)
        ]
        await watch.wait(ids, 300)
    await asyncio.sleep(SETTLE_S)
    readings["after_jobs"] = proxy.rss()
    stop.set()
    readings["events"] = await asyncio.wait_for(reader, 60)
    await asyncio.sleep(SETTLE_S)
    readings["gone"] = proxy.rss()
    return readings


async def main(clients: int, job_streams: int, stored: int, jobs: int, rounds: int) -> None:
    header(
        f"bench.memory: proxy RSS, {stored:,} jobs stored, {clients} + {job_streams} SSE clients"
    )
    mb = 1e6
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        data = root / "data"
        await asyncio.to_thread(data.mkdir)
        ids = await store_jobs(data, stored)
        async with served("hello", root) as (_, hello):
            bare = rss_bytes(hello.pid)
        async with (
            standin(root / "comfy", record=False) as comfy,
            proxy_process([comfy.url], data) as proxy,
            http(proxy.url) as client,
        ):
            async with Watcher(client) as watch:  # warm-up: a job, the lists
                await watch.wait([await watch.submit(job_body((64, 64, 5), 1, "warm-up"))])
            for path in ("/jobs", "/api/jobs", f"/status/{ids[0]}", f"/api/jobs/{ids[1]}"):
                (await client.get(path)).raise_for_status()
            await asyncio.sleep(SETTLE_S)
            idle = proxy.rss()
            # Per-job streams: on stored jobs (each gets its snapshot, then stays open).
            paths = ["/api/events"] * clients + [f"/api/jobs/{i}/events" for i in ids[:job_streams]]
            results = [
                await one_round(proxy, client, paths, jobs, 100 * (n + 1)) for n in range(rounds)
            ]
    print(f"  hello app, bench.polling (for scale)   {bare / mb:7.1f} MB")
    print(f"  baseline: proxy idle                   {idle / mb:7.1f} MB")
    for n, r in enumerate(results, 1):
        print(
            f"  round {n}: {len(paths)} clients connected in {r['connect_s']:.1f} s, "
            f"{r['events']:,.0f} events received in all"
        )
        for key, label in (
            ("connected", "with the clients connected"),
            ("after_jobs", f"after {jobs} jobs fanned out to them"),
            ("gone", "once they have gone"),
        ):
            print(f"    {label:<35} {r[key] / mb:7.1f} MB  (x{r[key] / idle:.2f} idle)")
    first = results[0]
    print(f"  per client: {(first['connected'] - idle) / len(paths) / 1e3:.0f} kB (round 1)")
    highest = max(max(r["connected"], r["after_jobs"]) for r in results)
    check("RSS with the clients (highest reading)", highest / mb, TARGET_MB, " MB", digits=1)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=500, help="on /api/events")
    parser.add_argument("--job-streams", type=int, default=5, help="on /api/jobs/{id}/events")
    parser.add_argument("--stored", type=int, default=10_000)
    parser.add_argument("--jobs", type=int, default=3, help="jobs run while they follow")
    parser.add_argument("--rounds", type=int, default=2, help="connect, fan out, disconnect")
    args = parser.parse_args()
    asyncio.run(main(args.clients, args.job_streams, args.stored, args.jobs, args.rounds))
