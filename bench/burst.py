"""A burst of jobs: does the proxy keep the GPU as busy as a script driving ComfyUI itself?

`--jobs` jobs (20) at a tiny size on the stand-in with its GPU timing profile (so a job lasts
what it would on an H200, divided by `--speed`), three ways, on the same stand-in:

- baseline: ComfyUI driven directly, every prompt queued at once on one websocket, each
  output fetched through `/view` when its prompt is done;
- through the proxy, one client per job, each following its job's SSE stream
  (`/api/jobs/{id}/events`) until it is completed;
- through the proxy, one client per job, each polling `/status/{id}` every `--poll` s (1).

Reported: wall time from the first POST to the last job seen completed, as a ratio to the
baseline [<= 1.02], and ComfyUI's idle gap between consecutive prompts (the next
`execution_start` minus the previous `execution_success`, the timestamps `/history` shows in
`status.messages`, taken from the instrumented stand-in because the proxy deletes a finished
prompt's history) [median <= 5 ms].

    .venv/bin/python -m bench.burst [--jobs 20] [--size 64x64x5] [--speed 1] [--poll 1]
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from bench.common import (
    PROFILE,
    Child,
    SseEvent,
    check,
    direct_jobs,
    execution_spans,
    follow,
    header,
    http,
    idle_gaps_ms,
    job_body,
    median,
    parse_size,
    percentile,
    profile_note,
    proxy_process,
    size_name,
    standin,
    submit,
)

WALL_TARGET = 1.02
GAP_TARGET_MS = 5.0


async def sse_client(client: httpx.AsyncClient, body: dict[str, Any], timeout_s: float) -> str:
    """Submit one job and follow its own event stream until it is completed."""
    job_id = await submit(client, body)

    def on_event(event: SseEvent) -> bool:
        status = event.job.get("status")
        if status in ("failed", "stopped"):
            raise RuntimeError(f"job {job_id} {status}: {event.job.get('error')}")
        return status == "completed"

    await follow(client, f"/api/jobs/{job_id}/events", on_event, timeout_s=timeout_s)
    return job_id


async def polling_client(
    client: httpx.AsyncClient, body: dict[str, Any], every_s: float, timeout_s: float
) -> str:
    """Submit one job and poll `/status/{id}` every `every_s` until it is completed."""
    job_id = await submit(client, body)
    async with asyncio.timeout(timeout_s):
        while True:
            status = (await client.get(f"/status/{job_id}")).json()
            if status["status"] == "completed":
                return job_id
            if status["status"] == "error":
                raise RuntimeError(f"job {job_id}: {status.get('error')}")
            await asyncio.sleep(every_s)  # the client's polling period; bounded by the timeout


@dataclass
class Burst:
    wall_s: float
    prompt_ids: list[str]
    started_at: float  # time.time() at the first POST

    def breakdown(self, spans: dict[str, tuple[int, int]]) -> str:
        """Where the wall time went: until ComfyUI started the first prompt, ComfyUI busy,
        idle between prompts, and from its last prompt's end until the client knew."""
        mine = sorted(spans[p] for p in self.prompt_ids if p in spans)
        lead = mine[0][0] / 1000 - self.started_at
        busy = sum(b - a for a, b in mine) / 1000
        idle = sum(idle_gaps_ms(spans, self.prompt_ids)) / 1000
        tail = self.wall_s - (mine[-1][1] / 1000 - self.started_at)
        return f"lead-in {lead:5.3f} s + busy {busy:6.2f} + idle {idle:5.3f} + tail {tail:5.3f}"


async def through_proxy(
    proxy: Child, bodies: list[dict[str, Any]], mode: str, poll_s: float, timeout_s: float
) -> Burst:
    """One burst, one client per job."""
    async with http(proxy.url, timeout_s=timeout_s) as client:
        start, epoch = time.perf_counter(), time.time()
        if mode == "sse":
            clients = [sse_client(client, body, timeout_s) for body in bodies]
        else:
            clients = [polling_client(client, body, poll_s, timeout_s) for body in bodies]
        ids = await asyncio.gather(*clients)
        wall = time.perf_counter() - start
        views = [(await client.get(f"/api/jobs/{job_id}")).json() for job_id in ids]
    return Burst(wall, [view["prompt_id"] for view in views], epoch)


def gap_line(name: str, run: Burst, base: float, gaps: list[int]) -> None:
    print(
        f"  {name:<28} wall {run.wall_s:6.2f} s  ratio {run.wall_s / base:6.3f}   idle gap: "
        f"median {median(gaps):4.1f} ms, p90 {percentile(gaps, 90):3.0f}, "
        f"max {max(gaps, default=0):3.0f} ({len(gaps)} gaps)"
    )


async def main(count: int, size: tuple[int, int, int], speed: float, poll_s: float) -> None:
    header(
        f"bench.burst: {count} jobs at {size_name(size)} through the proxy vs ComfyUI directly",
        profile_note(PROFILE, speed),
    )
    timeout_s = 600.0

    def bodies(tag: str) -> list[dict[str, Any]]:
        base = 1000 * len(tag)  # distinct seeds and prompts per burst: nothing comes cached
        return [job_body(size, base + i, f"burst {tag} {i}") for i in range(count)]

    results: dict[str, Burst] = {}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        async with standin(root / "comfy", profile=PROFILE, speed=speed) as comfy:
            await direct_jobs(comfy.url, bodies("warm-up")[:1])  # the loaders' cold start
            direct = await direct_jobs(comfy.url, bodies("direct"), timeout_s)
            results["direct"] = Burst(direct.wall_s, direct.prompt_ids, direct.started_at)
            async with proxy_process(
                [comfy.url], root / "data", comfyui_output_dir=comfy.data_dir / "output"
            ) as proxy:
                await through_proxy(proxy, bodies("proxy warm-up")[:1], "sse", poll_s, timeout_s)
                for mode in ("sse", "poll"):
                    results[mode] = await through_proxy(
                        proxy, bodies(mode), mode, poll_s, timeout_s
                    )
            spans = execution_spans(comfy.records())
    base = results["direct"].wall_s
    gaps = {mode: idle_gaps_ms(spans, run.prompt_ids) for mode, run in results.items()}
    print(f"  one job takes ComfyUI {median([b - a for a, b in spans.values()]):.0f} ms (median)")
    names = {
        "direct": "baseline: ComfyUI directly",
        "sse": "proxy, clients on SSE",
        "poll": f"proxy, clients poll {poll_s:g} s",
    }
    for mode, run in results.items():
        gap_line(names[mode], run, base, gaps[mode])
    print("  where the wall time went (ComfyUI's timestamps have 1 ms steps):")
    for mode, run in results.items():
        print(f"    {names[mode]:<28} {run.breakdown(spans)}")
    for mode in ("sse", "poll"):
        wall = results[mode].wall_s
        check(f"wall ratio proxy/direct, {names[mode]}", wall / base, WALL_TARGET)
        check(
            f"ComfyUI idle gap median, {names[mode]}",
            median(gaps[mode]),
            GAP_TARGET_MS,
            " ms",
            digits=1,
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=20)
    parser.add_argument("--size", default="64x64x5")
    parser.add_argument("--speed", type=float, default=1.0, help="stand-in: GPU time / speed")
    parser.add_argument("--poll", type=float, default=1.0, help="polling period, seconds")
    args = parser.parse_args()
    asyncio.run(main(args.jobs, parse_size(args.size), args.speed, args.poll))
