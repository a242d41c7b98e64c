"""Progress that tells the truth, end to end: on a stand-in that keeps time like FastWAN on
a GPU (VAE decode the longest part, no events while it runs), the second job of a size
shows a bar that rises with the clock, learned from the first."""

from __future__ import annotations

import time

import httpx

from proxy.testing import job_views
from tests.support import proxy_server, standin_process

SIZE = {"width": 640, "height": 352, "num_frames": 61, "num_inference_steps": 4}
# Generous: the bar is sampled as the client receives it; the target of bench.progress is
# 10 points.
MAX_GAP = 25.0


async def run_and_watch(client: httpx.AsyncClient, prompt: str) -> list[tuple[float, dict]]:
    """Create a job and follow it to its end: (arrival time, job view) of each event."""
    job = (await client.post("/api/jobs", json={"prompt": prompt, **SIZE})).json()
    seen: list[tuple[float, dict]] = []
    async with client.stream("GET", f"/api/jobs/{job['id']}/events") as stream:
        async for view in job_views(stream.aiter_lines()):
            seen.append((time.monotonic(), view))
            if view["status"] in ("completed", "failed", "stopped"):
                return seen
    raise AssertionError("the event stream ended before the job did")


def worst_gap(seen: list[tuple[float, dict]]) -> float:
    running = [(t, v) for t, v in seen if v["status"] in ("running", "completed")]
    start, end = running[0][0], running[-1][0]
    return max(abs(v["progress"] - 100 * (t - start) / (end - start)) for t, v in running)


async def test_the_second_job_of_a_size_moves_with_time(tmp_path, make_settings):
    with standin_process(tmp_path / "comfy", profile="fastwan-h200", speed=2.0) as standin:
        async with proxy_server(make_settings([standin.url])) as proxy:
            async with httpx.AsyncClient(base_url=proxy.url, timeout=30) as client:
                first = await run_and_watch(client, "learn the times")
                assert first[-1][1]["status"] == "completed", first[-1][1]
                learned = (await client.get("/api/workflows/fastwan_t2v/timings")).json()
                [entry] = learned["timings"]
                nodes = {n["class_type"]: n["seconds"] for n in entry["nodes"]}
                assert nodes["VAEDecode"] > nodes["KSampler"]  # the profile's shape, measured

                second = await run_and_watch(client, "now show them")
    views = [v for _, v in second]
    assert views[-1]["status"] == "completed" and views[-1]["progress"] == 100
    shown = [v["progress"] for v in views]
    assert shown == sorted(shown), f"the bar went back: {shown}"
    decoding = [v["progress"] for v in views if v["stage"] == "decoding"]
    assert len(set(decoding)) > 2, "the bar stood still through the decode"
    assert worst_gap(second) < MAX_GAP
    etas = [v["eta_s"] for v in views if v["status"] == "running" and v["eta_s"] is not None]
    assert etas and max(etas) < 30
