"""Many clients polling: 500 concurrent pollers of `/status/{id}` and `/jobs` against a proxy
holding 10,000 jobs, vs the same pollers on a bare FastAPI hello route (the baseline: what
uvicorn and the HTTP stack alone cost on this box).

Each server runs in a process of its own (same uvicorn settings), so the pollers' CPU is not
the server's. Every poller sends a fixed number of requests on its own keep-alive connection,
loopback only. Reported per route: errors (the target is 0), requests per second, and p50/p99
latency as the client sees it.

    .venv/bin/python -m bench.polling [--pollers 500] [--requests 10] [--jobs 10000]
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp
import uvicorn
from fastapi import FastAPI

from proxy.db import Database
from proxy.jobs.models import Job, JobStatus
from proxy.jobs.store import JobStore
from proxy.launcher import free_port
from proxy.settings import Settings
from proxy.testing import REPO_ROOT


def hello_app() -> FastAPI:
    app = FastAPI()

    @app.get("/hello")
    async def hello() -> dict[str, str]:
        return {"hello": "world"}

    return app


def _settings(data_dir: Path) -> Settings:
    # ComfyUI is not asked: nothing listens there, and every stored job is finished.
    return Settings(data_dir=data_dir, comfyui_urls=[f"http://127.0.0.1:{free_port()}"])


def _serve(kind: str, data_dir: str, port: int) -> None:
    """The server process: the proxy on `data_dir`, or the hello app."""
    from proxy.app import create_app

    app = create_app(_settings(Path(data_dir))) if kind == "proxy" else hello_app()
    # The same for both: one process, h11, no access log.
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)


async def store_jobs(data_dir: Path, count: int) -> list[str]:
    """`count` finished jobs, written straight through the job store (one transaction)."""
    settings = _settings(data_dir)
    db = Database(settings.db_url)
    try:
        await db.migrate()
        start = datetime.now(UTC) - timedelta(days=30)
        jobs = [
            Job(
                id=f"bench-{n:06d}",
                workflow="fastwan_t2v",
                status=JobStatus.FAILED if n % 10 == 0 else JobStatus.COMPLETED,
                params={"prompt": f"job {n}", "seed": n, "width": 832, "height": 480},
                surface="fastwan",
                progress=100.0,
                error="bench: a failed job" if n % 10 == 0 else None,
                created_at=start + timedelta(seconds=n),
                updated_at=start + timedelta(seconds=n + 60),
                finished_at=start + timedelta(seconds=n + 60),
            )
            for n in range(count)
        ]
        await JobStore(db).insert_many(jobs)
    finally:
        await db.close()
    return [job.id for job in jobs]


@dataclass
class Tally:
    latencies: list[float] = field(default_factory=list)
    errors: dict[str, int] = field(default_factory=dict)

    def error(self, what: str) -> None:
        self.errors[what] = self.errors.get(what, 0) + 1


async def poll(url: str, paths: list[list[str]]) -> tuple[dict[str, Tally], float]:
    """One poller per list of paths, all at once; a tally per route and the wall time."""
    tallies: dict[str, Tally] = {}
    connector = aiohttp.TCPConnector(limit=len(paths), force_close=False)
    timeout = aiohttp.ClientTimeout(total=120)
    async with aiohttp.ClientSession(url, connector=connector, timeout=timeout) as session:
        start_line = asyncio.Event()

        async def poller(mine: list[str]) -> None:
            await start_line.wait()
            for path in mine:
                route = "/status/{id}" if path.startswith("/status/") else path
                tally = tallies.setdefault(route, Tally())
                began = time.perf_counter()
                try:
                    async with session.get(path) as response:
                        await response.read()
                        if response.status != 200:
                            tally.error(f"HTTP {response.status}")
                            continue
                except (aiohttp.ClientError, TimeoutError) as exc:
                    tally.error(type(exc).__name__)
                    continue
                tally.latencies.append(time.perf_counter() - began)

        tasks = [asyncio.create_task(poller(mine)) for mine in paths]
        began = time.perf_counter()
        start_line.set()
        await asyncio.gather(*tasks)
        wall = time.perf_counter() - began
    return tallies, wall


async def wait_up(url: str, process: asyncio.subprocess.Process, path: str) -> None:
    async with aiohttp.ClientSession(url) as session:
        for _ in range(600):
            if process.returncode is not None:
                raise RuntimeError(f"the server exited with {process.returncode}")
            try:
                async with session.get(path) as response:
                    if response.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.1)  # a starting process; bounded by the loop
    raise RuntimeError(f"{url} did not answer")


async def measure(
    kind: str, data_dir: Path, paths: list[list[str]]
) -> tuple[dict[str, Tally], float]:
    port = free_port()
    process = await asyncio.create_subprocess_exec(
        *(sys.executable, "-m", "bench.polling", "--serve", kind, str(data_dir), str(port)),
        cwd=REPO_ROOT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        await wait_up(url, process, "/hello" if kind == "hello" else "/jobs?limit=1")
        # Warm-up: the first requests pay for imports, caches and connection set-up.
        await poll(url, [p[:2] for p in paths[:50]])
        return await poll(url, paths)
    finally:
        process.terminate()
        await asyncio.wait_for(process.wait(), 30)


def report(name: str, tallies: dict[str, Tally], wall: float) -> None:
    total = sum(len(t.latencies) + sum(t.errors.values()) for t in tallies.values())
    print(f"{name}: {total} requests in {wall:.1f} s = {total / wall:,.0f} req/s overall")
    for route, tally in tallies.items():
        lat = sorted(tally.latencies)
        p50 = statistics.median(lat) * 1000 if lat else float("nan")
        p99 = lat[min(len(lat) - 1, int(len(lat) * 0.99))] * 1000 if lat else float("nan")
        errors = ", ".join(f"{k}: {v}" for k, v in tally.errors.items()) or "0"
        print(
            f"  {route:<14} ok {len(lat):6d}  errors {errors:<10} p50 {p50:7.1f} ms  "
            f"p99 {p99:7.1f} ms"
        )


async def main(pollers: int, requests: int, job_count: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = Path(tmp) / "data"
        data_dir.mkdir()
        began = time.perf_counter()
        ids = await store_jobs(data_dir, job_count)
        print(f"stored {job_count} jobs in {time.perf_counter() - began:.1f} s")
        rng = random.Random(42)
        # Each poller alternates: the status of a random job, then the first page of /jobs.
        proxy_paths = [
            [f"/status/{rng.choice(ids)}" if i % 2 == 0 else "/jobs" for i in range(requests)]
            for _ in range(pollers)
        ]
        hello_paths = [["/hello"] * requests for _ in range(pollers)]

        base, base_wall = await measure("hello", data_dir, hello_paths)
        via, via_wall = await measure("proxy", data_dir, proxy_paths)

    print(f"{pollers} concurrent pollers x {requests} requests, loopback, {job_count} jobs stored")
    report("baseline: bare FastAPI /hello", base, base_wall)
    report("proxy: /status/{id} and /jobs (first page, 100 jobs)", via, via_wall)
    base_lat = base["/hello"].latencies
    base_rps = len(base_lat) / base_wall
    for route, tally in via.items():
        if tally.latencies:
            ratio = statistics.median(tally.latencies) / statistics.median(base_lat)
            print(f"  {route}: p50 latency {ratio:.1f}x the baseline's")
    total_ok = sum(len(t.latencies) for t in via.values())
    print(f"  throughput: {total_ok / via_wall / base_rps:.2f} of the baseline's req/s")
    errors = sum(sum(t.errors.values()) for t in via.values())
    print(f"  errors: {errors} (target 0)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pollers", type=int, default=500)
    parser.add_argument("--requests", type=int, default=10, help="per poller")
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--serve", nargs=3, metavar=("KIND", "DATA_DIR", "PORT"))
    args = parser.parse_args()
    if args.serve:
        _serve(args.serve[0], args.serve[1], int(args.serve[2]))
    else:
        asyncio.run(main(args.pollers, args.requests, args.jobs))
