"""A ComfyUI that misbehaves (answers 500, hangs, is slow to accept) or a defect in the proxy:
every job still ends, with a message a person can act on, and no prompt is left running in
ComfyUI behind a job the proxy has given up on."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
import pytest
import websockets

from proxy.jobs.cleanup import ComfyCleanup
from proxy.jobs.tracker import JobTracker
from tests.e2e.conftest import SMALL
from tests.support import StandinProcess, follow_job, proxy_server

WAIT_S = 60.0


@pytest.fixture(autouse=True)
def keep_comfyui_history(monkeypatch: pytest.MonkeyPatch) -> None:
    """These tests read ComfyUI's history as the evidence of what ran there: the cleanup that
    deletes an ended job's entry (tests/e2e/test_cleanup.py) must not race them to it."""
    monkeypatch.setattr(ComfyCleanup, "finished", lambda self, job: None)


async def _generate(client: httpx.AsyncClient, prompt: str, **fields: object) -> str:
    r = await client.post("/api/jobs", json={"prompt": prompt, **_native(SMALL), **fields})
    assert r.status_code in (200, 201), r.text
    return r.json()["id"]


def _native(fields: dict) -> dict:
    names = {"length": "num_frames", "steps": "num_inference_steps"}
    return {names.get(k, k): v for k, v in fields.items()}


async def _history(standin: StandinProcess) -> dict:
    async with httpx.AsyncClient(base_url=standin.url, timeout=10) as comfy:
        return (await comfy.get("/history")).json()


class QueueWatch:
    """Another websocket client of the stand-in: ComfyUI broadcasts every queue change
    (`status` with `queue_remaining`) to all sockets, so a test can wait for "our prompt has
    arrived" and "ComfyUI is idle again" without polling."""

    def __init__(self, ws: websockets.ClientConnection) -> None:
        self.ws = ws

    async def until_remaining(self, predicate, timeout_s: float = WAIT_S) -> int:
        async with asyncio.timeout(timeout_s):
            async for frame in self.ws:
                if not isinstance(frame, str):
                    continue
                message = json.loads(frame)
                if message.get("type") != "status":
                    continue
                remaining = message["data"]["status"]["exec_info"]["queue_remaining"]
                if predicate(remaining):
                    return remaining
        raise AssertionError("the stand-in's websocket closed")


@asynccontextmanager
async def watch_queue(standin: StandinProcess) -> AsyncIterator[QueueWatch]:
    url = standin.url.replace("http://", "ws://") + "/ws?clientId=test-watcher"
    async with websockets.connect(url) as ws:
        yield QueueWatch(ws)


async def test_an_http_500_from_comfyui_fails_the_job_instead_of_resubmitting(
    standin, make_settings
):
    standin.control("POST", "faults/http_error", json={"path": "/prompt", "times": 1})
    async with proxy_server(make_settings([standin.url])) as proxy:
        async with httpx.AsyncClient(base_url=proxy.url, timeout=30) as client:
            job_id = await _generate(client, "a server bug")
            final, _ = await follow_job(client, job_id, {"completed", "failed"}, WAIT_S)
            # One POST only: a second one would have met no fault and completed.
            assert final["status"] == "failed", final
            assert "answered unexpectedly" in final["error"]
            assert "HTTP 500" in final["error"] and "Server got itself in trouble" in final["error"]
            assert final["attempts"][-1]["status"] == "failed"
            assert await _history(standin) == {}
            backends = (await client.get("/api/backends")).json()["backends"]
            assert backends[0]["status"] == "up"


async def test_an_internal_error_fails_the_job_and_the_next_one_runs(
    standin, make_settings, monkeypatch
):
    original = JobTracker._build_graph

    async def broken(self, *, upload):
        if self.job.params.get("prompt") == "trips a defect":
            raise RuntimeError("simulated defect")
        return await original(self, upload=upload)

    monkeypatch.setattr(JobTracker, "_build_graph", broken)
    async with proxy_server(make_settings([standin.url])) as proxy:
        async with httpx.AsyncClient(base_url=proxy.url, timeout=30) as client:
            bad = await _generate(client, "trips a defect")
            final, _ = await follow_job(client, bad, {"completed", "failed"}, WAIT_S)
            assert final["status"] == "failed", final
            assert final["error"] == (
                "Internal error in the proxy while following this job "
                "(the details are in the proxy's log)"
            )
            good = await _generate(client, "fine")
            final, _ = await follow_job(client, good, {"completed", "failed"}, WAIT_S)
            assert final["status"] == "completed", final


async def test_stop_while_comfyui_is_still_answering_the_submit_withdraws_the_prompt(
    standin, make_settings
):
    # ComfyUI queues the prompt at once but answers /prompt only 30 s later.
    standin.control("POST", "faults/prompt_delay", json={"seconds": 30})
    async with (
        watch_queue(standin) as watch,
        proxy_server(make_settings([standin.url])) as proxy,
        httpx.AsyncClient(base_url=proxy.url, timeout=30) as client,
    ):
        job_id = await _generate(client, "stop me early", num_inference_steps=100)
        await watch.until_remaining(lambda n: n >= 1)  # the prompt is in ComfyUI
        async with httpx.AsyncClient(base_url=standin.url, timeout=10) as comfy:
            prompt_id = (await comfy.get("/queue")).json()["queue_running"][0][1]
        stopped = (await client.post(f"/api/jobs/{job_id}/stop")).json()
        assert stopped["status"] == "stopped"
        assert stopped["prompt_id"] == prompt_id  # recorded before the POST went out
        await watch.until_remaining(lambda n: n == 0)  # ComfyUI is idle again
        entry = (await _history(standin))[prompt_id]
        assert entry["status"]["status_str"] == "error"
        assert "execution_interrupted" in [m[0] for m in entry["status"]["messages"]]
        assert (await client.get(f"/api/jobs/{job_id}")).json()["status"] == "stopped"


async def test_a_run_comfyui_goes_silent_on_is_interrupted_and_failed(standin, make_settings):
    # VAEDecode takes 4 s more without a word; the proxy gives up after 1 s of silence.
    standin.control("POST", "faults/slow", json={"class_type": "VAEDecode", "seconds": 4})
    settings = make_settings([standin.url], job_stall_timeout_s=1.0)
    async with (
        proxy_server(settings) as proxy,
        httpx.AsyncClient(base_url=proxy.url, timeout=30) as client,
    ):
        job_id = await _generate(client, "hangs in decode")
        final, seen = await follow_job(client, job_id, {"completed", "failed"}, WAIT_S)
        assert final["status"] == "failed", final
        assert "reported nothing for" in final["error"]
        assert "JOB_STALL_TIMEOUT_S" in final["error"]
        assert any(j["stage"] == "decoding" for j in seen)
        # The backend recovers: the stalled prompt was interrupted, the next job runs.
        again = await _generate(client, "after the stall")
        final, _ = await follow_job(client, again, {"completed", "failed"}, WAIT_S)
        assert final["status"] == "completed", final
        statuses = sorted(e["status"]["status_str"] for e in (await _history(standin)).values())
        assert statuses == ["error", "success"]


async def test_a_submit_that_times_out_is_taken_back_so_it_cannot_run_twice(standin, make_settings):
    standin.control("POST", "faults/prompt_delay", json={"seconds": 5})
    settings = make_settings([standin.url], comfy_http_timeout_s=1.0)
    async with (
        proxy_server(settings) as proxy,
        httpx.AsyncClient(base_url=proxy.url, timeout=30) as client,
    ):
        job_id = await _generate(client, "slow to accept", num_inference_steps=60)
        waiting, _ = await follow_job(
            client, job_id, lambda j: "Waiting for a ComfyUI" in (j["message"] or ""), WAIT_S
        )
        assert "did not answer" in waiting["message"]
        standin.control("DELETE", "faults")
        final, _ = await follow_job(client, job_id, {"completed", "failed"}, WAIT_S)
        assert final["status"] == "completed", final
        history = await _history(standin)
        statuses = sorted(e["status"]["status_str"] for e in history.values())
        assert statuses == ["error", "success"], "the first prompt ran as well"
        assert final["prompt_id"] in history


async def test_a_comfyui_whose_http_side_hangs_fails_the_job_within_the_down_timeout(
    standin, make_settings
):
    """The websocket stays up but /queue never answers in time: every re-attach fails at
    once. The wait is counted from the first failure, so the job ends after the limit."""
    settings = make_settings([standin.url], comfy_http_timeout_s=0.5, backend_down_timeout_s=3.0)
    async with (
        proxy_server(settings) as proxy,
        httpx.AsyncClient(base_url=proxy.url, timeout=30) as client,
    ):
        job_id = await _generate(client, "http hangs", num_inference_steps=100)
        await follow_job(client, job_id, lambda j: (j["step"] or 0) >= 1, WAIT_S)
        standin.control(
            "POST", "faults/slow_route", json={"path": "/queue", "seconds": 60, "times": None}
        )
        standin.control("POST", "websockets/drop", json={"mode": "abort"})  # forces a resync
        final, seen = await follow_job(client, job_id, {"completed", "failed"}, WAIT_S)
        assert final["status"] == "failed", final
        assert "has not been usable for 3 s" in final["error"]
        assert "did not answer GET /queue in time" in final["error"]
        assert any("waiting for it" in (j["message"] or "") for j in seen)
