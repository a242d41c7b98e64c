"""Many clients polling: 500 concurrent pollers of `/status/{id}` and `/jobs` against a proxy
holding 10,000 jobs, vs the same pollers on a bare FastAPI hello route (the baseline: what
uvicorn and the HTTP stack alone cost on this box).

Each server runs in a process of its own (same uvicorn settings), so the pollers' CPU is not
the server's. Every poller sends a fixed number of requests on its own keep-alive connection,
loopback only. Reported per route: errors (the target is 0), requests per second, and p50/p99
latency as the client sees it.

    .venv/bin/python -m bench.polling [--pollers 500] [--requests 10] [--jobs 10000]
    .venv/bin/python -m bench.polling --only status   # /status alone [>= 0.5 of the baseline]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp
import uvicorn
from fastapi import FastAPI
from fastapi.responses import FileResponse

from bench.common import check, header, print_sample, stop_process, wait_up
from proxy.db import Database
from proxy.jobs.models import Job, JobStatus
from proxy.jobs.store import JobStore
from proxy.launcher import free_port
from proxy.settings import Settings
from proxy.testing import REPO_ROOT


class BigChunkFileResponse(FileResponse):
    chunk_size = 1 << 20


def hello_app() -> FastAPI:
    """The bare baseline: `/hello`; with BENCH_FILE set, also that file as Starlette serves it
    (`/file`, 64 KiB reads) and with 1 MiB reads (`/file-1m`), for bench.download."""
    app = FastAPI()

    @app.get("/hello")
    async def hello() -> dict[str, str]:
        return {"hello": "world"}

    path = os.environ.get("BENCH_FILE")
    if path:

        @app.get("/file")
        async def file() -> FileResponse:
            return FileResponse(path, media_type="video/mp4")

        @app.get("/file-1m")
        async def file_1m() -> FileResponse:
            return BigChunkFileResponse(path, media_type="video/mp4")

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


@asynccontextmanager
async def served(
    kind: str, data_dir: Path, sample: Path | None = None, env: dict[str, str] | None = None
) -> AsyncIterator[tuple[str, asyncio.subprocess.Process]]:
    """A server process of `kind` ("proxy" on `data_dir`, or "hello"), its URL once it
    answers; with `sample`, under `bench.sampler`, which reports there when it stops."""
    port = free_port()
    sampler = ["-m", "bench.sampler", str(sample)] if sample else []
    process = await asyncio.create_subprocess_exec(
        *(sys.executable, *sampler, "-m", "bench.polling"),
        *("--serve", kind, str(data_dir), str(port)),
        cwd=REPO_ROOT,
        stderr=asyncio.subprocess.DEVNULL if sample else None,
        env={**os.environ, **(env or {})},
    )
    url = f"http://127.0.0.1:{port}"
    try:
        await wait_up(url, process, "/hello" if kind == "hello" else "/jobs?limit=1", 60)
        yield url, process
    finally:
        # SIGINT under the sampler: uvicorn re-raises it, and the sampler writes at exit.
        await stop_process(process, 30, signal.SIGINT if sample else signal.SIGTERM)


async def measure(
    kind: str,
    data_dir: Path,
    paths: list[list[str]],
    sample: Path | None = None,
    *,
    warm_all: bool = False,
) -> tuple[dict[str, Tally], float]:
    """One server process of `kind` and the pollers against it; with `sample`, the server
    runs under `bench.sampler` from the end of the warm-up."""
    async with served(kind, data_dir, sample) as (url, process):
        # Warm-up: the first requests pay for imports, caches and connection set-up; with
        # `warm_all`, every poller's first path once (each client's job has been read once,
        # as it has when a client follows the job it created).
        await poll(url, [p[:1] for p in paths] if warm_all else [p[:2] for p in paths[:50]])
        if sample:
            process.send_signal(signal.SIGUSR1)
        return await poll(url, paths)


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


STATUS_TARGET = 0.5  # /status req/s as a share of the bare route's, with --only status


def poller_paths(ids: list[str], pollers: int, requests: int, only: str | None) -> list[list[str]]:
    """Each poller's requests: by default the status of a random job, then the first page of
    /jobs, alternating; `only` "jobs" keeps the second; `only` "status" is a client following
    its own job: one job per poller (of the 10,000), its status again and again."""
    rng = random.Random(42)
    if only == "status":
        return [[f"/status/{rng.choice(ids)}"] * requests for _ in range(pollers)]

    def path(i: int) -> str:
        if only is None and i % 2 == 0:
            return f"/status/{rng.choice(ids)}"
        return "/jobs"

    return [[path(i) for i in range(requests)] for _ in range(pollers)]


async def main(
    pollers: int,
    requests: int,
    job_count: int,
    only: str | None = None,
    sample: Path | None = None,
) -> None:
    header(f"bench.polling{' --only ' + only if only else ''}")
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = Path(tmp) / "data"
        data_dir.mkdir()
        began = time.perf_counter()
        ids = await store_jobs(data_dir, job_count)
        print(f"stored {job_count} jobs in {time.perf_counter() - began:.1f} s")
        proxy_paths = poller_paths(ids, pollers, requests, only)
        hello_paths = [["/hello"] * requests for _ in range(pollers)]

        following = only == "status"
        base, base_wall = await measure("hello", data_dir, hello_paths, warm_all=following)
        via, via_wall = await measure("proxy", data_dir, proxy_paths, sample, warm_all=following)

    print(f"{pollers} concurrent pollers x {requests} requests, loopback, {job_count} jobs stored")
    report("baseline: bare FastAPI /hello", base, base_wall)
    routes = {"status": "/status/{id}", "jobs": "/jobs (first page, 100 jobs)"}
    shown = routes[only] if only else " and ".join(routes.values())
    report(f"proxy: {shown}", via, via_wall)
    base_lat = base["/hello"].latencies
    base_rps = len(base_lat) / base_wall
    for route, tally in via.items():
        if tally.latencies:
            ratio = statistics.median(tally.latencies) / statistics.median(base_lat)
            print(f"  {route}: p50 latency {ratio:.1f}x the baseline's")
    total_ok = sum(len(t.latencies) for t in via.values())
    share = total_ok / via_wall / base_rps
    print(f"  throughput: {share:.2f} of the baseline's req/s ({base_rps:,.0f} req/s)")
    if only == "status":
        check("/status req/s over the bare route's", share, STATUS_TARGET, below=False)
    errors = sum(sum(t.errors.values()) for t in via.values())
    print(f"  errors: {errors} (target 0)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pollers", type=int, default=500)
    parser.add_argument("--requests", type=int, default=10, help="per poller")
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument(
        "--only", choices=("status", "jobs"), help="one route instead of both alternating"
    )
    parser.add_argument("--sample", type=Path, help="run the proxy under bench.sampler")
    parser.add_argument("--serve", nargs=3, metavar=("KIND", "DATA_DIR", "PORT"))
    args = parser.parse_args()
    if args.serve:
        _serve(args.serve[0], args.serve[1], int(args.serve[2]))
    else:
        asyncio.run(main(args.pollers, args.requests, args.jobs, args.only, args.sample))
        if args.sample:
            print_sample(args.sample)
