"""Durability: proxy restarts, websocket drops, ComfyUI restarts, cancelling only our prompt."""

from __future__ import annotations

import asyncio
import json
import uuid

import httpx
import websockets

from proxy.jobs.cleanup import ComfyCleanup
from tests.e2e.conftest import SMALL
from tests.support import follow_job, proxy_server, standin_process


async def wait_until(client, job_id, predicate, timeout_s=60.0):
    job, _ = await follow_job(client, job_id, predicate, timeout_s)
    return job


async def test_a_job_survives_a_proxy_restart_mid_run(tmp_path, make_settings):
    with standin_process(tmp_path / "comfy", step_seconds=0.3) as standin:
        settings = make_settings([standin.url])
        async with proxy_server(settings) as proxy:
            async with httpx.AsyncClient(base_url=proxy.url, timeout=30) as client:
                running = (
                    await client.post(
                        "/generate", json={"prompt": "restart me", **SMALL, "steps": 20}
                    )
                ).json()
                queued = (await client.post("/generate", json={"prompt": "and me", **SMALL})).json()
                await wait_until(client, running["job_id"], lambda j: (j["step"] or 0) >= 2)
                before = (await client.get(f"/api/jobs/{running['job_id']}")).json()
        # The proxy is gone; ComfyUI keeps working. A new proxy on the same data dir:
        async with proxy_server(settings) as proxy:
            async with httpx.AsyncClient(base_url=proxy.url, timeout=30) as client:
                listed = {j["job_id"] for j in (await client.get("/jobs")).json()["jobs"]}
                assert listed == {running["job_id"], queued["job_id"]}
                for job_id in (running["job_id"], queued["job_id"]):  # the running one first
                    final, seen = await follow_job(client, job_id, {"completed", "failed"})
                    assert final["status"] == "completed", final
                    assert final["outputs"][0]["frames"] == 9
                    if job_id == running["job_id"]:
                        # Re-attached mid-run: progress carries on from where it was shown.
                        progress = [before["progress"], *(j["progress"] for j in seen)]
                        assert progress == sorted(progress), "progress went backwards"
                        assert any(j["eta_s"] for j in seen if j["status"] == "running"), seen


async def test_progress_carries_on_after_a_restart_during_a_quiet_node(tmp_path, make_settings):
    """Re-attached while VAEDecode runs (no events for seconds): the next event names a node the
    new proxy has not seen finish, yet progress stays where it was shown, never back to 0."""
    with standin_process(tmp_path / "comfy", step_seconds=0.05) as standin:
        standin.control("POST", "faults/slow", json={"class_type": "VAEDecode", "seconds": 3})
        settings = make_settings([standin.url])
        async with proxy_server(settings) as proxy:
            async with httpx.AsyncClient(base_url=proxy.url, timeout=30) as client:
                job_id = (
                    await client.post(
                        "/api/jobs",
                        json={"prompt": "decode", "num_frames": 9, "width": 64, "height": 64},
                    )
                ).json()["id"]
                before = await wait_until(client, job_id, lambda j: j["stage"] == "decoding")
        async with proxy_server(settings) as proxy:
            async with httpx.AsyncClient(base_url=proxy.url, timeout=30) as client:
                final, seen = await follow_job(client, job_id, {"completed", "failed"})
        assert final["status"] == "completed", final
        progress = [before["progress"], *(j["progress"] for j in seen)]
        assert before["progress"] > 30  # sampling done: well under way
        assert progress == sorted(progress), f"progress went backwards: {progress}"


async def test_a_job_completes_after_its_websocket_drops_mid_run(tmp_path, make_settings):
    with standin_process(tmp_path / "comfy", step_seconds=0.2) as standin:
        async with proxy_server(make_settings([standin.url])) as proxy:
            async with httpx.AsyncClient(base_url=proxy.url, timeout=30) as client:
                job_id = (
                    await client.post("/generate", json={"prompt": "drop", **SMALL, "steps": 8})
                ).json()["job_id"]
                await wait_until(client, job_id, lambda j: (j["step"] or 0) >= 1)
                standin.control("POST", "websockets/drop", json={"mode": "abort"})
                final, seen = await follow_job(client, job_id, {"completed", "failed"})
                assert final["status"] == "completed"
                assert any("reconnecting" in (j["message"] or "") for j in seen)
                backends = (await client.get("/api/backends")).json()["backends"]
                assert backends[0]["status"] == "up"


async def test_a_comfyui_restart_that_lost_the_job_fails_it_with_a_message(tmp_path, make_settings):
    port = None
    with standin_process(tmp_path / "comfy", step_seconds=0.3) as standin:
        port = int(standin.url.rsplit(":", 1)[1])
        settings = make_settings([standin.url])
        async with proxy_server(settings) as proxy:
            async with httpx.AsyncClient(base_url=proxy.url, timeout=30) as client:
                job_id = (
                    await client.post("/generate", json={"prompt": "lost", **SMALL, "steps": 30})
                ).json()["job_id"]
                await wait_until(client, job_id, lambda j: (j["step"] or 0) >= 1)
                standin.process.kill()
                standin.process.wait(10)
                with standin_process(tmp_path / "comfy", step_seconds=0.0, port=port):
                    final, _ = await follow_job(
                        client, job_id, {"completed", "failed"}, timeout_s=60
                    )
                    assert final["status"] == "failed"
                    assert "no longer knows this job" in final["error"]
                    # and the backend is usable again
                    again = (
                        await client.post("/generate", json={"prompt": "again", **SMALL})
                    ).json()["job_id"]
                    final, _ = await follow_job(client, again, {"completed", "failed"})
                    assert final["status"] == "completed"


async def test_delete_withdraws_only_our_prompt(tmp_path, make_settings, monkeypatch):
    """Another client's prompt in the same ComfyUI is never interrupted or removed."""
    # ComfyUI's history is the evidence here; the cleanup that deletes an ended or deleted
    # job's entry (tests/e2e/test_cleanup.py) must not race this test to it.
    monkeypatch.setattr(ComfyCleanup, "finished", lambda self, job: None)

    async def keep(self: ComfyCleanup, job: object) -> None:
        return None

    monkeypatch.setattr(ComfyCleanup, "deleted", keep)
    with standin_process(tmp_path / "comfy", step_seconds=0.1) as standin:
        async with proxy_server(make_settings([standin.url])) as proxy:
            async with (
                httpx.AsyncClient(base_url=proxy.url, timeout=30) as client,
                httpx.AsyncClient(base_url=standin.url, timeout=30) as comfy,
            ):
                # Our job runs; another client's prompt waits behind it in ComfyUI's queue.
                ours = (
                    await client.post("/generate", json={"prompt": "ours", **SMALL, "steps": 40})
                ).json()["job_id"]
                job = await wait_until(client, ours, lambda j: j["status"] == "running")
                graph = (await client.get(f"/api/jobs/{ours}")).json()
                other_graph = _graph_for_other_client(job)
                other_id = str(uuid.uuid4())
                ws_url = standin.url.replace("http://", "ws://") + "/ws?clientId=someone-else"
                async with websockets.connect(ws_url) as ws:
                    r = await comfy.post(
                        "/prompt",
                        json={
                            "prompt": other_graph,
                            "client_id": "someone-else",
                            "prompt_id": other_id,
                        },
                    )
                    assert r.status_code == 200, r.text
                    assert (await client.delete(f"/jobs/{ours}")).status_code == 200
                    async with asyncio.timeout(60):  # the other client's run ends normally
                        async for frame in ws:
                            msg = json.loads(frame) if isinstance(frame, str) else {}
                            data = msg.get("data", {})
                            if (
                                msg.get("type") == "executing"
                                and data.get("node") is None
                                and data.get("prompt_id") == other_id
                            ):
                                break
                hist = (await comfy.get(f"/history/{other_id}")).json()
                assert hist[other_id]["status"]["status_str"] == "success"
                ours_hist = (await comfy.get(f"/history/{job['prompt_id']}")).json()
                assert ours_hist[job["prompt_id"]]["status"]["status_str"] == "error"  # interrupted
                assert graph["status"] in ("running", "queued")


def _graph_for_other_client(job: dict) -> dict:
    import json
    from pathlib import Path

    graph = json.loads(
        (Path(__file__).resolve().parents[2] / "workflows" / "fastwan_t2v.json").read_text()
    )
    graph["6"]["inputs"]["text"] = "someone else's prompt"
    graph["55"]["inputs"].update(width=64, height=64, length=5)
    graph["3"]["inputs"]["steps"] = 3
    graph["58"]["inputs"]["filename_prefix"] = "other/client"
    return graph


async def test_stop_then_start_is_a_new_attempt(client):
    job = (
        await client.post(
            "/api/jobs",
            json={
                "prompt": "attempts",
                **{"width": 64, "height": 64, "num_frames": 9, "num_inference_steps": 40},
            },
        )
    ).json()
    assert job["status"] == "queued" and job["attempt"] == 1
    await wait_until(client, job["id"], lambda j: j["status"] == "running")
    stopped = (await client.post(f"/api/jobs/{job['id']}/stop")).json()
    assert stopped["status"] == "stopped"
    again = (await client.post(f"/api/jobs/{job['id']}/start", json={})).json()
    assert again["attempt"] == 2 and again["status"] == "queued"
    r = await client.post(f"/api/jobs/{job['id']}/start")
    assert r.status_code == 409 and r.json()["status"] in ("queued", "running")
    await client.post(f"/api/jobs/{job['id']}/stop")
    final = (await client.get(f"/api/jobs/{job['id']}")).json()
    assert [a["status"] for a in final["attempts"]] == ["stopped", "stopped"]
