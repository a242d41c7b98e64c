"""Seed 001 end to end against the stand-in: generate, progress, download, delete."""

from __future__ import annotations

import asyncio
import re
import shutil
import sys

import httpx

from proxy.media.probe import probe_video_sync
from tests.e2e.conftest import SMALL
from tests.support import REPO_ROOT, follow_job, require_shared

SEED_001 = REPO_ROOT.parent / "shared" / "seeds" / "001_09452b8fce1052af.txt"


async def test_generate_progress_download_delete(client, proxy, standin, tmp_path):
    health = (await client.get("/", headers={"accept": "application/json"})).json()
    assert health["status"] == "healthy" and health["comfyui"][0]["status"] == "up"

    r = await client.post(
        "/generate", json={"prompt": "a ladybug on a leaf", "seed": 123456, **SMALL}
    )
    assert r.status_code == 200
    body = r.json()
    assert body["status"] == "queued" and body["message"] == "Video generation started"
    job_id = body["job_id"]

    final, seen = await follow_job(client, job_id, {"completed", "failed"})
    assert final["status"] == "completed", final
    progress = [j["progress"] for j in seen]
    assert progress == sorted(progress), "progress went backwards"
    assert progress[-1] == 100 and max(progress[:-1]) < 100
    stages = {j["stage"] for j in seen}
    assert {"sampling", "decoding", "storing output"} <= stages
    assert any(j["step"] == 4 and j["steps"] == 4 for j in seen)

    status = (await client.get(f"/status/{job_id}")).json()
    assert status["status"] == "completed" and status["progress"] == 100
    assert (
        status["video_ready"] is True
        and status["download_url"] == f"{client.base_url}/download/{job_id}"
    )
    assert status["seed"] == 123456 and status["error"] is None

    video = await client.get(f"/download/{job_id}")
    assert video.status_code == 200 and video.headers["content-type"] == "video/mp4"
    assert f'filename="{job_id}.mp4"' in video.headers["content-disposition"]
    path = tmp_path / "got.mp4"
    path.write_bytes(video.content)
    info = probe_video_sync(path)
    assert (info["width"], info["height"], info["frames"], info["codec"]) == (64, 64, 9, "h264")
    assert info["fps"] == 8

    part = await client.get(f"/download/{job_id}", headers={"range": "bytes=0-99"})
    assert part.status_code == 206 and len(part.content) == 100
    assert part.headers["content-range"].startswith("bytes 0-99/")

    listed = (await client.get("/jobs")).json()
    assert [j["job_id"] for j in listed["jobs"]] == [job_id]

    stored = proxy.settings.outputs_path / f"{job_id}.mp4"
    assert stored.is_file()
    r = await client.delete(f"/jobs/{job_id}")
    assert r.status_code == 200 and r.json()["deleted"] is True
    assert not stored.exists()
    assert (await client.get(f"/status/{job_id}")).status_code == 404


async def test_bad_input_is_a_422_naming_the_field_and_nothing_reaches_comfyui(client, standin):
    for body, field in (
        ({"prompt": "x", "width": 1000}, "width"),
        ({"prompt": "x", "length": 120}, "length"),
        ({"prompt": "x", "steps": "eight"}, "steps"),
        ({"steps": 8}, "prompt"),
        ({"prompt": "x", "seed": -5}, "seed"),
        ({"prompt": "x", "colour": "red"}, "colour"),
    ):
        r = await client.post("/generate", json=body)
        assert r.status_code == 422, body
        assert r.json()["field"] == field and field in r.json()["error"]
    assert (await client.get("/jobs")).json()["total"] == 0
    async with httpx.AsyncClient() as direct:
        assert (await direct.get(f"{standin.url}/history")).json() == {}
        assert (await direct.get(f"{standin.url}/queue")).json()["queue_pending"] == []


async def test_unknown_and_unfinished_jobs(client):
    for method, path in (
        ("GET", "/status/nope"),
        ("GET", "/download/nope"),
        ("DELETE", "/jobs/nope"),
    ):
        r = await client.request(method, path)
        assert r.status_code == 404 and "nope" in r.json()["error"]
    job_id = (await client.post("/generate", json={"prompt": "slow", **SMALL, "steps": 60})).json()[
        "job_id"
    ]
    r = await client.get(f"/download/{job_id}")
    assert r.status_code == 409
    assert r.json()["status"] in ("queued", "processing") and "not ready" in r.json()["error"]
    await client.delete(f"/jobs/{job_id}")


async def test_a_missing_model_file_becomes_an_error_a_person_can_act_on(client, standin):
    lora = (
        standin.data_dir
        / "models"
        / "loras"
        / "Wan2_2_5B_FastWanFullAttn_lora_rank_128_bf16.safetensors"
    )
    lora.unlink()
    job_id = (await client.post("/generate", json={"prompt": "x", **SMALL})).json()["job_id"]
    final, _ = await follow_job(client, job_id, {"completed", "failed"})
    assert final["status"] == "failed"
    status = (await client.get(f"/status/{job_id}")).json()
    assert status["status"] == "error"
    error = status["error"]
    assert "ComfyUI rejected the workflow" in error and "LoraLoaderModelOnly" in error
    assert "lora_name" in error and "models/loras" in error


async def test_a_node_failure_names_the_node_and_an_oom_says_what_to_do(client, standin):
    standin.control(
        "POST", "faults/node", json={"class_type": "VAEDecode", "message": "decoder exploded"}
    )
    job_id = (await client.post("/generate", json={"prompt": "x", **SMALL})).json()["job_id"]
    final, _ = await follow_job(client, job_id, {"completed", "failed"})
    assert final["status"] == "failed"
    assert "node 8 (VAEDecode)" in final["error"] and "decoder exploded" in final["error"]

    standin.control("DELETE", "faults")
    standin.control("POST", "faults/oom", json={"class_type": "KSampler"})
    job_id = (await client.post("/generate", json={"prompt": "y", **SMALL})).json()["job_id"]
    final, _ = await follow_job(client, job_id, {"completed", "failed"})
    assert "out of GPU memory" in final["error"] and "node 3 (KSampler)" in final["error"]


async def test_the_seed_python_example_runs_unchanged(proxy, tmp_path):
    """The seed's Python example, verbatim but for host and port (and a shorter poll)."""
    text = require_shared(SEED_001).read_text()
    code = re.search(r"```python\n(.*?)```", text, re.S).group(1)
    code = code.replace("http://localhost:8189", proxy.url)
    code = code.replace("time.sleep(5)", "time.sleep(0.5)")  # the example's own poll interval
    script = tmp_path / "example.py"
    script.write_text(code)
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        str(script),
        cwd=tmp_path,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 240)
    text_out = out.decode()
    assert proc.returncode == 0, text_out
    assert "Video downloaded!" in text_out and "Status: processing" in text_out
    videos = list(tmp_path.glob("video_*.mp4"))
    assert len(videos) == 1
    info = probe_video_sync(videos[0])
    assert (info["width"], info["height"], info["frames"]) == (1280, 704, 121)


async def _run(*cmd: str, timeout_s: float = 60) -> str:
    """A command, awaited without blocking the loop that serves the proxy."""
    proc = await asyncio.create_subprocess_exec(*cmd, stdout=asyncio.subprocess.PIPE)
    out, _ = await asyncio.wait_for(proc.communicate(), timeout_s)
    assert proc.returncode == 0, out
    return out.decode()


async def test_the_seed_curl_examples_work(proxy, tmp_path):
    """The seed's three curl commands, as written but for host and port."""
    curl = shutil.which("curl")
    if curl is None:
        import pytest

        pytest.skip("curl is not installed")
    import json

    body = json.loads(
        await _run(
            curl,
            "-X",
            "POST",
            f"{proxy.url}/generate",
            "-H",
            "Content-Type: application/json",
            "-d",
            '{\n    "prompt": "A beautiful sunset over mountains with clouds moving",\n'
            '    "steps": 8,\n    "fps": 24\n  }',
            "-s",
        )
    )
    assert body["status"] == "queued"
    job_id = body["job_id"]
    async with httpx.AsyncClient(base_url=proxy.url, timeout=30) as client:
        final, _ = await follow_job(client, job_id, {"completed", "failed"}, timeout_s=240)
    assert final["status"] == "completed"
    status = json.loads(await _run(curl, "-s", f"{proxy.url}/status/{job_id}"))
    assert status["status"] == "completed" and status["video_ready"] is True
    await _run(
        curl, "-o", str(tmp_path / "generated_video.mp4"), f"{proxy.url}/download/{job_id}", "-s"
    )
    info = probe_video_sync(tmp_path / "generated_video.mp4")
    assert (info["width"], info["height"], info["frames"]) == (1280, 704, 121)
