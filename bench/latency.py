"""Progress latency: from the moment ComfyUI sends a `progress` message to the moment an SSE
client of the proxy receives the event that shows it.

The stand-in runs instrumented (`bench.standin_probe`): it records `time.monotonic()` as it
hands each `progress` message (prompt, node, value) to a websocket. The proxy is a process of
its own; the SSE client (`/api/events`), in this process, stamps every event as it completes.
CLOCK_MONOTONIC is one clock for every process on Linux, so the two stamps compare directly.
A progress message at step `value` is shown by the first event of that job whose `step` is at
least `value` [p99 < 50 ms].

Baseline, in the same run: the same jobs driven directly, a client on ComfyUI's own websocket
stamping each `progress` message as it arrives (loopback, one hop: the floor).

No timing profile: every sampler step takes `--step-seconds` (0.05 s) and jobs have `--steps`
steps (40), so there are many progress messages. `--followers N` adds N more SSE clients on
`/api/events` that only read (fan-out).

    .venv/bin/python -m bench.latency [--jobs 8] [--steps 40] [--step-seconds 0.05]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import websockets

from bench.common import (
    Child,
    Watcher,
    check,
    comfy_graph,
    follow,
    header,
    http,
    job_body,
    median,
    percentile,
    proxy_process,
    standin,
)

TARGET_MS = 50.0
SIZE = (64, 64, 5)


def sent_progress(comfy: Child, prompt_ids: set[str]) -> list[dict[str, Any]]:
    return [
        r
        for r in comfy.records()
        if r.get("kind") == "sent" and r.get("type") == "progress" and r["prompt_id"] in prompt_ids
    ]


async def direct(comfy: Child, bodies: list[dict]) -> list[float]:
    """Latency of each `progress` message to a client on ComfyUI's own websocket (seconds)."""
    client_id = uuid.uuid4().hex
    arrivals: dict[tuple[str, int], float] = {}
    prompt_ids = set()
    async with (
        asyncio.timeout(600),
        websockets.connect(f"{comfy.url.replace('http', 'ws', 1)}/ws?clientId={client_id}") as ws,
        http(comfy.url) as client,
    ):
        for n, body in enumerate(bodies):
            prompt_id = str(uuid.uuid4())
            prompt_ids.add(prompt_id)
            graph = comfy_graph(body, f"latency/{n}")
            payload = {"prompt": graph, "client_id": client_id, "prompt_id": prompt_id}
            (await client.post("/prompt", json=payload)).raise_for_status()
        pending = set(prompt_ids)
        async for frame in ws:
            now = time.monotonic()
            if not isinstance(frame, str):
                continue
            msg = json.loads(frame)
            data = msg.get("data", {})
            if msg.get("type") == "progress":
                arrivals.setdefault((data["prompt_id"], int(data["value"])), now)
            elif msg.get("type") == "executing" and data.get("node") is None:
                pending.discard(data.get("prompt_id"))
                if not pending:
                    break
    return [
        arrivals[(r["prompt_id"], int(r["value"]))] - r["t"]
        for r in sent_progress(comfy, prompt_ids)
        if (r["prompt_id"], int(r["value"])) in arrivals
    ]


async def through_proxy(
    comfy: Child, proxy: Child, bodies: list[dict], followers: int
) -> tuple[list[float], int]:
    """Latency of each `progress` message to the proxy's SSE client (seconds), and how many
    had no event showing them."""
    async with http(proxy.url, timeout_s=600) as client, Watcher(client) as watch:
        readers = [
            asyncio.create_task(follow(client, "/api/events", lambda e: False, timeout_s=600))
            for _ in range(followers)
        ]
        try:
            ids = [await watch.submit(body) for body in bodies]
            await watch.wait(ids, 600)
        finally:
            for reader in readers:
                reader.cancel()
            await asyncio.gather(*readers, return_exceptions=True)
        # prompt id -> the events of its job (full job events carry the prompt id).
        by_prompt: dict[str, list] = {}
        for job_id in ids:
            events = watch.events[job_id]
            prompt = next(e.job["prompt_id"] for e in events if e.job.get("prompt_id"))
            by_prompt[prompt] = events
    latencies, unmatched = [], 0
    for sent in sent_progress(comfy, set(by_prompt)):
        shown = next(
            (
                e.t
                for e in by_prompt[sent["prompt_id"]]
                if e.t >= sent["t"] and (e.job.get("step") or 0) >= int(sent["value"])
            ),
            None,
        )
        if shown is None:
            unmatched += 1
        else:
            latencies.append(shown - sent["t"])
    return latencies, unmatched


def line(name: str, latencies: list[float]) -> None:
    ms = [x * 1000 for x in latencies]
    print(
        f"  {name:<34} {len(ms):5d} messages  p50 {median(ms):6.1f} ms  "
        f"p90 {percentile(ms, 90):6.1f}  p99 {percentile(ms, 99):6.1f}  max {max(ms):6.1f}"
    )


async def main(jobs: int, steps: int, step_s: float, followers: int) -> None:
    header(
        "bench.latency: ComfyUI progress message -> SSE event at the client",
        f"stand-in: no profile, {steps} steps x {step_s:g} s; {jobs} jobs at 64x64x5; "
        f"{followers} more SSE followers",
    )

    def bodies(tag: str) -> list[dict]:
        return [job_body(SIZE, 500 * len(tag) + i, f"{tag} {i}", steps=steps) for i in range(jobs)]

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        async with standin(root / "comfy", step_seconds=step_s) as comfy:
            base = await direct(comfy, bodies("direct"))
            async with proxy_process([comfy.url], root / "data") as proxy:
                await through_proxy(comfy, proxy, bodies("warm-up")[:1], 0)
                via, unmatched = await through_proxy(comfy, proxy, bodies("proxy"), followers)
    line("baseline: ComfyUI's websocket", base)
    line("through the proxy, SSE /api/events", via)
    if unmatched:
        print(f"  {unmatched} progress messages were never shown by any event (coalesced)")
    p99, base99 = percentile(via, 99) * 1000, percentile(base, 99) * 1000
    check("p99 latency, progress -> SSE", p99, TARGET_MS, " ms", digits=1)
    print(f"  ratio p99 proxy/direct: {p99 / base99:.1f}  (direct p99 {base99:.2f} ms)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=8)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--step-seconds", type=float, default=0.05)
    parser.add_argument("--followers", type=int, default=0, help="more SSE clients reading")
    args = parser.parse_args()
    asyncio.run(main(args.jobs, args.steps, args.step_seconds, args.followers))
