"""Download throughput: a finished job's video through the proxy (`/download/{id}` and
`/api/jobs/{id}/video`) vs ComfyUI's own `/view` of the same file on the stand-in
(the baseline) [>= 0.9 of its throughput], plus a Range request sanity check. For the
diagnosis, the same file from a bare FastAPI app (Starlette's FileResponse, as the proxy
serves it, and with 1 MiB reads instead of its 64 KiB).

One job at `--size` (1280x704x121) runs through the proxy; the proxy keeps its copy and,
not told ComfyUI's output folder, leaves ComfyUI's in place. The stand-in's synthetic MP4 is
small (well under a megabyte at 1280x704x121), so by default both copies are then replaced
by the same `--file-mb` (64) of random bytes: the figure is what serving a large video costs
(`--file-mb 0` keeps the real file). Each route is read `--rounds` times (15), alternating,
whole bodies on one keep-alive connection per route (aiohttp, 1 MiB reads); medians compared.

    .venv/bin/python -m bench.download [--file-mb 64] [--rounds 15] [--size 1280x704x121]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
import time
from pathlib import Path

import aiohttp

from bench.common import (
    Watcher,
    check,
    header,
    http,
    job_body,
    median,
    parse_size,
    proxy_process,
    size_name,
    standin,
)
from bench.polling import served

TARGET = 0.9


async def timed_get(session: aiohttp.ClientSession, url: str) -> tuple[float, int]:
    """Seconds to read the whole body, and its length."""
    start = time.perf_counter()
    size = 0
    async with session.get(url) as response:
        response.raise_for_status()
        async for chunk in response.content.iter_chunked(1 << 20):
            size += len(chunk)
    return time.perf_counter() - start, size


async def read_all(urls: dict[str, str], size: int, rounds: int) -> dict[str, list[float]]:
    """Seconds per whole read of each URL, `rounds` times, alternating (one session each)."""
    times: dict[str, list[float]] = {k: [] for k in urls}
    sessions = {k: aiohttp.ClientSession() for k in urls}
    try:
        for name, url in urls.items():  # warm-up: connections, page cache
            _, got = await timed_get(sessions[name], url)
            if got != size:
                raise RuntimeError(f"{name}: {got} bytes, not {size}")
        for _ in range(rounds):
            for name, url in urls.items():
                times[name].append((await timed_get(sessions[name], url))[0])
    finally:
        for session in sessions.values():
            await session.close()
    return times


async def ranges(url: str, data: bytes) -> list[str]:
    """Problems with Range requests at `url` (empty: all good)."""
    problems = []
    cases = {
        "bytes=1000-1999": (1000, 2000),
        f"bytes={len(data) - 500}-": (len(data) - 500, len(data)),
        "bytes=-300": (len(data) - 300, len(data)),
    }
    async with aiohttp.ClientSession() as session:
        for spec, (lo, hi) in cases.items():
            async with session.get(url, headers={"Range": spec}) as response:
                body = await response.read()
                expect = f"bytes {lo}-{hi - 1}/{len(data)}"
                if response.status != 206:
                    problems.append(f"{spec}: HTTP {response.status}, not 206")
                elif response.headers.get("Content-Range") != expect:
                    problems.append(
                        f"{spec}: Content-Range {response.headers.get('Content-Range')}"
                    )
                elif body != data[lo:hi]:
                    problems.append(f"{spec}: wrong bytes ({len(body)})")
        async with session.get(url, headers={"Range": f"bytes={len(data) + 10}-"}) as response:
            if response.status != 416:
                problems.append(f"past the end: HTTP {response.status}, not 416")
    return problems


async def main(size: tuple[int, int, int], file_mb: float, rounds: int) -> None:
    header(
        "bench.download: a finished job's video through the proxy vs ComfyUI's /view",
        f"job at {size_name(size)}, stand-in without profile; "
        + (f"both copies replaced by {file_mb:g} MB of random bytes" if file_mb else "real file"),
    )
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        async with (
            standin(root / "comfy") as comfy,
            proxy_process([comfy.url], root / "data") as proxy,
        ):
            async with http(proxy.url) as client, Watcher(client) as watch:
                job_id = await watch.submit(job_body(size, 7, "download"))
                await watch.wait([job_id], 300)
                job = (await client.get(f"/api/jobs/{job_id}")).json()
            output = job["outputs"][0]
            ours = proxy.data_dir / "outputs" / output["filename"]
            subfolder, _, name = output["comfy_filename"].rpartition("/")
            theirs = comfy.data_dir / "output" / subfolder / name
            real_bytes = output["size_bytes"]
            if file_mb:
                data = os.urandom(int(file_mb * 1e6))
                for path in (ours, theirs):
                    await asyncio.to_thread(path.write_bytes, data)
            else:
                data = await asyncio.to_thread(ours.read_bytes)
            view = f"{comfy.url}/view?filename={name}&subfolder={subfolder}&type=output"
            async with served("hello", root, env={"BENCH_FILE": str(ours)}) as (bare, _):
                urls = {
                    "baseline: ComfyUI /view": view,
                    "proxy /download/{id}": f"{proxy.url}/download/{job_id}",
                    "proxy /api/jobs/{id}/video": f"{proxy.url}/api/jobs/{job_id}/video",
                    "bare Starlette FileResponse": f"{bare}/file",
                    "bare, 1 MiB chunks": f"{bare}/file-1m",
                }
                times = await read_all(urls, len(data), rounds)
            problems = {k: await ranges(u, data) for k, u in list(urls.items())[1:3]}
    print(
        f"  file: {len(data) / 1e6:.1f} MB (the job's real MP4: {real_bytes / 1e6:.2f} MB), "
        f"median of {rounds}"
    )
    base = median(times["baseline: ComfyUI /view"])
    for name_, values in times.items():
        mbps = len(data) / median(values) / 1e6
        print(
            f"  {name_:<28} {median(values) * 1000:8.1f} ms  {mbps:8.0f} MB/s  "
            f"(min {min(values) * 1000:.1f}, max {max(values) * 1000:.1f} ms)"
        )
    for name_, values in list(times.items())[1:3]:
        check(f"throughput {name_} / ComfyUI's", base / median(values), TARGET, below=False)
    for name_, found in problems.items():
        print(f"  Range requests, {name_}: {'OK' if not found else '; '.join(found)}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", default="1280x704x121")
    parser.add_argument("--file-mb", type=float, default=64.0, help="0: the job's real file")
    parser.add_argument("--rounds", type=int, default=15)
    args = parser.parse_args()
    asyncio.run(main(parse_size(args.size), args.file_mb, args.rounds))
