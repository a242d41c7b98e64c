"""What one job costs the proxy in CPU: utime + stime of the proxy process (its threads too,
from /proc/<pid>/stat) across a burst of jobs, divided by the jobs, at a tiny and at the full
FastWAN size, the stand-in as fast as it goes (no timing profile, no step time).

A job's cost runs from the POST to the end of its clean-up in ComfyUI (history deleted, files
removed there), which is waited for before the second reading. The proxy's idle CPU over the
same time (its tickers and sweeps, measured just before) is taken off.

Baseline, in this run: copying the same file the way the proxy does (streamed from the
stand-in's `/view` into a file in 1 MiB chunks, in this process, `time.process_time`), which
is the part of a job's cost that must grow with its size [the rest should not: below 20 ms a
job at every size].

    .venv/bin/python -m bench.cost [--small 20] [--big 10] [--big-size 1280x704x121]
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import tempfile
import time
from pathlib import Path

import anyio

from bench.common import (
    Child,
    Watcher,
    check,
    direct_jobs,
    header,
    http,
    job_body,
    parse_size,
    print_sample,
    proxy_process,
    size_name,
    standin,
)

TARGET_MS = 20.0
IDLE_S = 3.0


async def settled(comfy: Child, timeout_s: float = 60.0) -> None:
    """Until ComfyUI's history is empty: every finished job's clean-up has run."""
    async with http(comfy.url) as client:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if not (await client.get("/history")).json():
                return
            await asyncio.sleep(0.05)  # bounded by the deadline
    raise RuntimeError("ComfyUI's history still holds entries: the clean-up did not finish")


async def burst(
    proxy: Child, comfy: Child, size: tuple[int, int, int], count: int, seed: int
) -> tuple[float, float]:
    """(proxy CPU seconds, wall seconds) for `count` jobs at `size`, submitted at once."""
    async with http(proxy.url, timeout_s=600) as client, Watcher(client) as watch:
        cpu0, wall0 = proxy.cpu_s(), time.perf_counter()
        ids = [
            await watch.submit(job_body(size, seed + i, f"cost {size_name(size)} {i}"))
            for i in range(count)
        ]
        await watch.wait(ids)
        await settled(comfy)
        return proxy.cpu_s() - cpu0, time.perf_counter() - wall0


async def copy_cost(comfy_url: str, params: dict[str, str], dest: Path, rounds: int) -> float:
    """CPU seconds of this process to stream one file from `/view` to disk, as the proxy does."""
    async with http(comfy_url) as client:
        cpu0 = time.process_time()
        for _ in range(rounds):
            async with client.stream("GET", "/view", params=params) as resp:
                resp.raise_for_status()
                async with anyio.wrap_file(open(dest, "wb")) as out:  # noqa: ASYNC230
                    async for chunk in resp.aiter_bytes(1 << 20):
                        await out.write(chunk)
        return (time.process_time() - cpu0) / rounds


async def main(
    small: tuple[int, int, int],
    big: tuple[int, int, int],
    counts: dict[tuple[int, int, int], int],
    sample: Path | None = None,
) -> None:
    header(
        "bench.cost: proxy CPU per job",
        "stand-in as fast as it goes (no profile, no step time); proxy: python -m proxy serve",
    )
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        async with standin(root / "comfy") as comfy:
            # As `up` runs it: the proxy knows ComfyUI's output folder and cleans it up.
            async with proxy_process(
                [comfy.url],
                root / "data",
                sample=sample,
                comfyui_output_dir=comfy.data_dir / "output",
            ) as proxy:
                for n, size in enumerate((small, big)):
                    await burst(proxy, comfy, size, 1, 90_000 + n)  # warm-up at this size
                if sample:
                    proxy.process.send_signal(signal.SIGUSR1)  # the sampler starts afresh
                idle0 = proxy.cpu_s()
                await asyncio.sleep(IDLE_S)
                idle_rate = (proxy.cpu_s() - idle0) / IDLE_S
                for n, size in enumerate((small, big)):
                    cpu, wall = await burst(proxy, comfy, size, counts[size], 1000 * (n + 1))
                    results[size] = (cpu, wall, max(cpu - idle_rate * wall, 0.0))
                async with http(proxy.url) as client:
                    listing = (await client.get("/api/jobs", params={"limit": 1})).json()
                job = (listing.get("jobs") or listing.get("items") or [None])[0]
            # The big size's file, copied the way the proxy copies it.
            output = job["outputs"][0] if job and job.get("outputs") else None
            file_bytes, copy_s = 0, float("nan")
            if output:
                file_bytes = output["size_bytes"]
                # The proxy removed its copy in ComfyUI: make the same file there once more.
                run = await direct_jobs(comfy.url, [job_body(big, 777, "copy")])
                params = run.outputs[run.prompt_ids[0]][0]
                copy_s = await copy_cost(comfy.url, params, root / "copy.mp4", 5)

    print(f"  proxy idle: {idle_rate * 1000:.1f} ms CPU per second (taken off below)")
    print(
        f"  {'size':>13} {'jobs':>5} {'wall s':>7} {'CPU s':>6} {'ms/job':>7} "
        f"{'idle-corrected':>15}"
    )
    per_job = {}
    for size, (cpu, wall, corrected) in results.items():
        jobs = counts[size]
        per_job[size] = corrected / jobs * 1000
        print(
            f"  {size_name(size):>13} {jobs:5d} {wall:7.2f} {cpu:6.2f} {cpu / jobs * 1000:7.1f} "
            f"{per_job[size]:12.1f} ms"
        )
    for size in (small, big):
        check(f"CPU per job at {size_name(size)}", per_job[size], TARGET_MS, " ms")
    ratio = per_job[big] / per_job[small] if per_job[small] else float("nan")
    growth = per_job[big] - per_job[small]
    print(f"  ratio big/small: {ratio:.2f}")
    print(
        f"  file at {size_name(big)}: {file_bytes / 1e6:.2f} MB; copying it as the proxy does "
        f"(baseline): {copy_s * 1000:.1f} ms CPU"
    )
    if copy_s == copy_s and growth > 0:
        print(
            f"  growth big - small: {growth:.1f} ms/job, of which the copy explains "
            f"{min(copy_s * 1000 / growth, 9.99) * 100:.0f} %; "
            f"beyond the copy: {growth - copy_s * 1000:.1f} ms/job"
        )
    elif growth <= 0:
        print(f"  growth big - small: {growth:.1f} ms/job (none)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--small", type=int, default=20, help="jobs at the small size")
    parser.add_argument("--big", type=int, default=10, help="jobs at the big size")
    parser.add_argument("--small-size", default="64x64x5")
    parser.add_argument("--big-size", default="1280x704x121")
    parser.add_argument(
        "--sample", type=Path, help="run the proxy under bench.sampler, report written here"
    )
    args = parser.parse_args()
    small, big = parse_size(args.small_size), parse_size(args.big_size)
    asyncio.run(main(small, big, {small: args.small, big: args.big}, args.sample))
    if args.sample:
        print_sample(args.sample)
