"""Seeds 004 (batches) and 003 (scenes) end to end: the proxy in front of two stand-in ComfyUI
processes (two "GPUs"). Every wait is bounded and driven by the proxy's websockets."""

from __future__ import annotations

import asyncio
import io
import json
import zipfile
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
import websockets
from websockets.exceptions import ConnectionClosed

from proxy.media.probe import probe_video_sync
from tests.e2e.conftest import SMALL
from tests.support import StandinProcess, proxy_server, standin_process

ORDER = ["pending", "generating", "processing", "complete"]
SCENES = {
    "hook": "a red ball bounces into view",
    "problem": "the ball rolls towards a cliff",
    "solution": "a hand catches the ball",
    "cta": "the ball rests on a table",
}


@pytest.fixture
def two_standins(tmp_path: Path) -> AsyncIterator[tuple[StandinProcess, StandinProcess]]:
    with (
        standin_process(tmp_path / "gpu0", step_seconds=0.05) as a,
        standin_process(tmp_path / "gpu1", step_seconds=0.05) as b,
    ):
        yield a, b


async def follow_ws(url: str, timeout_s: float = 90.0, on_message=None) -> tuple[list[dict], int]:
    """Every status object a proxy websocket sends, until it closes; and the close code."""
    seen: list[dict] = []
    async with asyncio.timeout(timeout_s):
        async with websockets.connect(url) as ws:
            try:
                async for frame in ws:
                    seen.append(json.loads(frame))
                    if on_message is not None:
                        await on_message(seen[-1])
            except ConnectionClosed:
                pass
            return seen, ws.close_code


def assert_never_backwards(seen: list[dict]) -> None:
    for index in range(len(seen[0]["jobs"])):
        ranks = [
            ORDER.index(m["jobs"][index]["status"])
            if m["jobs"][index]["status"] in ORDER
            else len(ORDER)
            for m in seen
        ]
        assert ranks == sorted(ranks), f"job {index} went backwards: {ranks}"


async def test_a_batch_spreads_over_both_gpus_and_downloads_as_a_zip(
    two_standins, make_settings, tmp_path
):
    a, b = two_standins
    settings = make_settings([a.url, b.url], backend_queue_depth=1)
    async with (
        proxy_server(settings) as proxy,
        httpx.AsyncClient(base_url=proxy.url, timeout=30) as client,
    ):
        prompts = [f"prompt number {i}" for i in range(4)]
        r = await client.post("/api/video/batch_inference", json={"prompts": prompts, **SMALL})
        assert r.status_code == 200, r.text
        batch_id = r.json()["batch_id"]
        ws_url = proxy.url.replace("http://", "ws://") + f"/api/ws/batch/{batch_id}"
        seen, code = await follow_ws(ws_url)
        assert code == 1000
        assert seen[0]["total"] == 4 and seen[-1]["status"] == "complete"
        assert seen[-1]["message"] == "Completed: 4/4"
        assert_never_backwards(seen)
        assert any(j["status"] == "generating" for m in seen for j in m["jobs"])

        status = (await client.get(f"/api/video/batch_status/{batch_id}")).json()
        assert status == seen[-1]
        assert [j["prompt"] for j in status["jobs"]] == prompts
        assert {j["gpu_id"] for j in status["jobs"]} == {0, 1}
        ids = [j["job_id"] for j in status["jobs"]]

        r = await client.get(f"/api/video/batch_download/{batch_id}")
        assert r.status_code == 200 and r.headers["content-type"] == "application/zip"
        assert "attachment" in r.headers["content-disposition"]
        assert int(r.headers["content-length"]) == len(r.content)
        with zipfile.ZipFile(io.BytesIO(r.content)) as archive:
            assert archive.testzip() is None
            assert archive.namelist() == [f"job_{i}_{job_id}.mp4" for i, job_id in enumerate(ids)]
            for i, name in enumerate(archive.namelist()):
                path = tmp_path / name
                path.write_bytes(archive.read(name))
                info = probe_video_sync(path)
                assert (info["frames"], info["width"], info["height"]) == (9, 64, 64), name
                served = await client.get(status["jobs"][i]["video_url"])
                assert path.read_bytes() == served.content


async def test_a_gpu_dying_mid_batch_moves_its_job_to_the_other(tmp_path, make_settings):
    """Kill the stand-in of gpu 1 while its job samples: the job is retried on gpu 0 and the
    batch completes. The proxy notices only after about 30 s: proxy/jobs/tracker.py answers a
    dropped socket by waiting for its idle resync, and only then does the dispatcher's
    backend_down_timeout_s start counting."""
    with (
        standin_process(tmp_path / "gpu0", step_seconds=0.05) as a,
        standin_process(tmp_path / "gpu1", step_seconds=0.05) as b,
    ):
        settings = make_settings([a.url, b.url], backend_queue_depth=1, backend_down_timeout_s=1.0)
        async with (
            proxy_server(settings) as proxy,
            httpx.AsyncClient(base_url=proxy.url, timeout=30) as client,
        ):
            r = await client.post(
                "/api/video/batch_inference",
                json={"prompts": ["first", "second"], **SMALL, "steps": 40},
            )
            batch_id = r.json()["batch_id"]
            victim: dict[str, str] = {}

            async def kill_gpu1_mid_job(message: dict) -> None:
                for job in message["jobs"]:
                    if (
                        not victim
                        and job["gpu_id"] == 1
                        and job["status"] == "generating"
                        and job["progress"] > 5
                    ):
                        victim["job_id"] = job["job_id"]
                        b.process.kill()

            ws_url = proxy.url.replace("http://", "ws://") + f"/api/ws/batch/{batch_id}"
            seen, code = await follow_ws(ws_url, timeout_s=110, on_message=kill_gpu1_mid_job)
            assert victim, "no job ever ran on gpu 1"
            assert code == 1000 and seen[-1]["status"] == "complete", seen[-1]
            final = {j["job_id"]: j for j in seen[-1]["jobs"]}
            assert final[victim["job_id"]]["gpu_id"] == 0
            job = (await client.get(f"/api/jobs/{victim['job_id']}")).json()
            assert job["retries"] == 1 and job["outputs"][0]["frames"] == 9
            assert_never_backwards(seen)


async def test_one_failed_job_makes_a_partial_batch(standin, make_settings, tmp_path):
    standin.control(
        "POST",
        "faults/node",
        json={"class_type": "VAEDecode", "message": "decoder exploded", "times": 1},
    )
    async with (
        proxy_server(make_settings([standin.url], backend_queue_depth=1)) as proxy,
        httpx.AsyncClient(base_url=proxy.url, timeout=30) as client,
    ):
        r = await client.post(
            "/api/video/batch_inference", json={"prompts": ["one", "two", "three"], **SMALL}
        )
        batch_id = r.json()["batch_id"]
        seen, code = await follow_ws(
            proxy.url.replace("http://", "ws://") + f"/api/ws/batch/{batch_id}"
        )
        assert code == 1000
        status = (await client.get(f"/api/video/batch_status/{batch_id}")).json()
        assert (status["status"], status["completed"], status["failed"]) == ("partial", 2, 1)
        assert [j["status"] for j in status["jobs"]] == ["failed", "complete", "complete"]
        assert "decoder exploded" in status["jobs"][0]["message"]
        r = await client.get(f"/api/video/batch_download/{batch_id}")
        with zipfile.ZipFile(io.BytesIO(r.content)) as archive:
            assert [n.split("_")[1] for n in archive.namelist()] == ["1", "2"]


async def test_a_single_video_over_its_websocket(client, proxy, tmp_path):
    r = await client.post("/api/video/single_inference", json={"prompt": "a kite", **SMALL})
    job_id = r.json()["job_id"]
    seen, code = await follow_ws(proxy.url.replace("http://", "ws://") + f"/api/ws/video/{job_id}")
    assert code == 1000
    words = [m["status"] for m in seen]
    assert words[-1] == "complete" and "generating" in words
    assert [ORDER.index(w) for w in words] == sorted(ORDER.index(w) for w in words)
    progress = [m["progress"] for m in seen]
    assert progress == sorted(progress) and progress[-1] == 100
    video = await client.get(seen[-1]["video_url"])
    path = tmp_path / "single.mp4"
    path.write_bytes(video.content)
    assert probe_video_sync(path)["frames"] == 9


async def test_scenes_generate_regenerate_and_join(standin, make_settings, tmp_path):
    async with (
        proxy_server(make_settings([standin.url])) as proxy,
        httpx.AsyncClient(base_url=proxy.url, timeout=60) as client,
    ):
        session_id = (await client.post("/api/session", json={"scenes": SCENES, **SMALL})).json()[
            "session_id"
        ]
        standin.control(
            "POST",
            "faults/node",
            json={"class_type": "VAEDecode", "message": "scene broke", "times": 1},
        )
        r = await client.post("/api/videos/generate-scenes", json={"session_id": session_id})
        assert r.json()["message"] == "Video generation started for 4 scenes"
        batch_id = r.json()["job_id"]
        seen, code = await follow_ws(
            proxy.url.replace("http://", "ws://") + f"/api/ws/batch/{batch_id}"
        )
        assert code == 1000

        status = (await client.get(f"/api/videos/status/{batch_id}")).json()
        assert status["overall_status"] == "partial"
        by_name = {s["scenario"]: s for s in status["scenes"]}
        assert [s["scenario"] for s in status["scenes"]] == list(SCENES)
        broken = [n for n, s in by_name.items() if s["status"] == "failed"]
        assert len(broken) == 1 and "scene broke" in by_name[broken[0]]["error"]
        for scene in status["scenes"]:
            if scene["status"] == "completed":
                outputs = f"{client.base_url}/outputs/"
                assert scene["progress"] == 100 and scene["video_url"].startswith(outputs)
                name = scene["video_url"].removeprefix(outputs)
                assert (await client.get(f"/api/videos/{name}")).status_code == 200
        videos = (await client.get(f"/api/session/{session_id}")).json()["scene_videos"]
        assert [v["scenario"] for v in videos] == [n for n in SCENES if n not in broken]

        # Regenerate the broken scene and wait for it (the seed's answer).
        r = await client.post(
            "/api/videos/regenerate-scene",
            json={"session_id": session_id, "scenario": broken[0], "timeout_s": 60},
        )
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["success"] is True and body["scenario"] == broken[0]
        assert body["message"] == f"Video regenerated successfully for {broken[0]}"
        assert body["video_url"].startswith(f"{client.base_url}/outputs/")
        status = (await client.get(f"/api/videos/status/{batch_id}")).json()
        assert status["overall_status"] == "completed"
        videos = (await client.get(f"/api/session/{session_id}")).json()["scene_videos"]
        assert [v["scenario"] for v in videos] == list(SCENES)
        assert (
            next(v for v in videos if v["scenario"] == broken[0])["video_url"] == body["video_url"]
        )

        # Regenerate a good scene into a failure: 502 with the reason, and the scene is failed.
        standin.control(
            "POST",
            "faults/node",
            json={"class_type": "VAEDecode", "message": "again broke", "times": 1},
        )
        r = await client.post(
            "/api/videos/regenerate-scene", json={"session_id": session_id, "scenario": "cta"}
        )
        assert r.status_code == 502 and r.json()["success"] is False
        assert "again broke" in r.json()["error"]
        r = await client.post(
            "/api/videos/regenerate-scene", json={"session_id": session_id, "scenario": "cta"}
        )
        assert r.status_code == 200

        final = await client.get(f"/api/videos/final/{batch_id}")
        assert final.status_code == 200
        path = tmp_path / "final.mp4"
        path.write_bytes(final.content)
        info = probe_video_sync(path)
        assert info["frames"] == 4 * 9 and (info["width"], info["height"]) == (64, 64)
        batch = (await client.get(f"/api/batches/{batch_id}")).json()
        assert batch["final"]["mode"] == "remux" and batch["completed"] == 4
