"""Seed 003 surface on an offline proxy: sessions, generate-scenes, per-scene status,
scene_videos, regenerate (202 paths) and the joined video."""

from __future__ import annotations

from proxy.media.probe import probe_video_sync
from tests.batches.conftest import SMALL

SCENES = {"hook": "a hook shot", "problem": "a problem shot", "solution": "a fix", "cta": "buy"}


async def scene_jobs(offline, batch_id: str) -> dict[str, str]:
    status = (await offline.client.get(f"/api/videos/status/{batch_id}")).json()
    return {s["scenario"]: s["job_id"] for s in status["scenes"]}


async def test_sessions_accept_both_shapes_and_validate(offline):
    client = offline.client
    r = await client.post("/api/session", json={"scenes": SCENES, **SMALL})
    assert r.status_code == 201
    body = r.json()
    assert [s["scenario"] for s in body["scenes"]] == list(SCENES)
    assert body["params"] == SMALL and body["scene_videos"] == [] and body["job_id"] is None
    got = (await client.get(f"/api/session/{body['session_id']}")).json()
    assert got["scenes"] == body["scenes"]

    listed = [{"scenario": "b", "description": "second"}, {"scenario": "a", "description": "1"}]
    r = await client.post("/api/session", json={"scenes": listed, "params": {"steps": 2}})
    assert [s["scenario"] for s in r.json()["scenes"]] == ["b", "a"]
    assert r.json()["params"] == {"steps": 2}

    for bad, field in (
        ({"scenes": SCENES, "width": 100}, "width"),
        ({"scenes": [*listed, listed[0]]}, "scenes.2.scenario"),
        ({"scenes": {"hook": ""}}, "scenes.0.description"),
        ({"scenes": {"x": "y"}, "params": {"prompt": "no"}}, "params.prompt"),
        ({"scenes": SCENES, "frames": 3}, "frames"),
    ):
        r = await client.post("/api/session", json=bad)
        assert r.status_code == 422, (bad, r.text)
        assert r.json()["field"] == field, r.json()
    assert (await client.get("/api/session/nope")).status_code == 404


async def test_generate_status_partial_scene_videos_and_final(offline):
    client = offline.client
    session_id = (await client.post("/api/session", json={"scenes": SCENES, **SMALL})).json()[
        "session_id"
    ]
    r = await client.post("/api/videos/generate-scenes", json={"session_id": session_id})
    assert r.status_code == 200
    body = r.json()
    assert body["success"] is True and body["message"] == "Video generation started for 4 scenes"
    batch_id = body["job_id"]
    jobs = await scene_jobs(offline, batch_id)
    assert list(jobs) == list(SCENES)

    status = (await client.get(f"/api/videos/status/{batch_id}")).json()
    assert status["overall_status"] == "generating" and status["session_id"] == session_id
    assert {s["status"] for s in status["scenes"]} == {"generating"}
    assert (await client.get(f"/api/videos/final/{batch_id}")).status_code == 409

    await offline.complete(jobs["hook"], frames=9)
    await offline.run(jobs["problem"], progress=45.0)
    status = (await client.get(f"/api/videos/status/{batch_id}")).json()
    by_name = {s["scenario"]: s for s in status["scenes"]}
    assert by_name["hook"] == {
        "scenario": "hook",
        "status": "completed",
        "progress": 100,
        "video_url": f"{client.base_url}/outputs/{jobs['hook']}.mp4",
        "error": None,
        "job_id": jobs["hook"],
    }
    assert (by_name["problem"]["status"], by_name["problem"]["progress"]) == ("generating", 45)
    assert status["overall_status"] == "generating"
    # Videos are recorded on the session only once every scene has finished.
    assert (await client.get(f"/api/session/{session_id}")).json()["scene_videos"] == []

    await offline.fail(jobs["problem"], error="decoder exploded")
    await offline.complete(jobs["solution"], frames=5)
    await offline.complete(jobs["cta"], frames=13, width=96, height=32)
    status = (await client.get(f"/api/videos/status/{batch_id}")).json()
    assert status["overall_status"] == "partial"
    assert status["final_video_url"] == f"{client.base_url}/api/videos/final/{batch_id}"
    failed = next(s for s in status["scenes"] if s["scenario"] == "problem")
    assert failed["status"] == "failed" and failed["error"] == "decoder exploded"

    session = (await client.get(f"/api/session/{session_id}")).json()
    assert session["job_id"] == batch_id
    assert session["scene_videos"] == [
        {
            "scenario": name,
            "video_url": f"{client.base_url}/outputs/{jobs[name]}.mp4",
            "job_id": jobs[name],
        }
        for name in ("hook", "solution", "cta")
    ]

    # The last part differs in size: the join re-encodes, keeping every frame.
    final = await client.get(f"/api/videos/final/{batch_id}")
    assert final.status_code == 200 and final.headers["content-type"] == "video/mp4"
    path = offline.server.settings.data_dir / "final.mp4"
    path.write_bytes(final.content)
    info = probe_video_sync(path)
    assert (info["frames"], info["width"], info["height"]) == (9 + 5 + 13, 64, 64)
    batch = (await client.get(f"/api/batches/{batch_id}")).json()
    assert batch["kind"] == "scenes" and batch["final"]["mode"] == "reencode"
    cached = offline.services.outputs.path_for(batch["final"]["filename"])
    mtime = cached.stat().st_mtime_ns
    again = await client.get(f"/api/videos/final/{batch_id}")
    assert again.content == final.content and cached.stat().st_mtime_ns == mtime

    # Regenerating puts a new job in the scene's place; the session keeps the finished
    # videos until the new generation has finished too.
    r = await client.post(
        "/api/videos/regenerate-scene",
        json={"session_id": session_id, "scenario": "problem", "wait": False},
    )
    assert r.status_code == 202 and r.json()["job_id"] == batch_id
    new_job = r.json()["scene_job_id"]
    assert (await scene_jobs(offline, batch_id))["problem"] == new_job
    assert (await client.get(f"/api/videos/status/{batch_id}")).json()[
        "overall_status"
    ] == "generating"
    assert (await client.get(f"/api/videos/final/{batch_id}")).status_code == 409
    assert len((await client.get(f"/api/session/{session_id}")).json()["scene_videos"]) == 3

    await offline.complete(new_job, frames=9)
    status = (await client.get(f"/api/videos/status/{batch_id}")).json()
    assert status["overall_status"] == "completed"
    videos = (await client.get(f"/api/session/{session_id}")).json()["scene_videos"]
    assert [v["scenario"] for v in videos] == list(SCENES)
    assert videos[1]["job_id"] == new_job

    rebuilt = await client.get(f"/api/videos/final/{batch_id}")
    path.write_bytes(rebuilt.content)
    assert probe_video_sync(path)["frames"] == 9 + 9 + 5 + 13
    assert not cached.exists(), "the stale joined video is removed"


async def test_generate_and_regenerate_errors(offline):
    client = offline.client
    r = await client.post("/api/videos/generate-scenes", json={"session_id": "nope"})
    assert r.status_code == 404
    empty = (await client.post("/api/session", json={})).json()["session_id"]
    r = await client.post("/api/videos/generate-scenes", json={"session_id": empty})
    assert r.status_code == 422 and r.json()["field"] == "session_id"

    session_id = (await client.post("/api/session", json={"scenes": SCENES, **SMALL})).json()[
        "session_id"
    ]
    r = await client.post(
        "/api/videos/regenerate-scene", json={"session_id": session_id, "scenario": "hook"}
    )
    assert r.status_code == 409 and "generate-scenes first" in r.json()["error"]
    batch_id = (
        await client.post("/api/videos/generate-scenes", json={"session_id": session_id})
    ).json()["job_id"]
    r = await client.post(
        "/api/videos/regenerate-scene", json={"session_id": session_id, "scenario": "outro"}
    )
    assert r.status_code == 422 and r.json()["field"] == "scenario"
    assert "hook, problem, solution, cta" in r.json()["error"]

    old = (await scene_jobs(offline, batch_id))["hook"]
    # Nothing runs offline: the bounded wait ends in a 202 naming the job to follow.
    r = await client.post(
        "/api/videos/regenerate-scene",
        json={"session_id": session_id, "scenario": "hook", "timeout_s": 0.3},
    )
    assert r.status_code == 202
    assert "still running" in r.json()["message"] and r.json()["video_url"] is None
    replaced = (await client.get(f"/api/jobs/{old}")).json()
    assert replaced["status"] == "stopped"  # the replaced job does not keep a GPU busy
    assert (await scene_jobs(offline, batch_id))["hook"] == r.json()["scene_job_id"]
    assert (await client.get("/api/videos/status/nope")).status_code == 404
    assert (await client.get("/api/videos/final/nope")).status_code == 404


async def test_prompt_tools_can_store_drafted_scenes(offline):
    assert (await offline.client.get("/api/batches")).status_code == 200  # the lifespan ran
    save = offline.services.batches.save_scene_session
    session_id = await save(
        [
            {"scenario": "hook", "description": "a hook"},
            {"scenario": "cta", "description": "a call to action"},
        ]
    )
    got = (await offline.client.get(f"/api/session/{session_id}")).json()
    assert [s["scenario"] for s in got["scenes"]] == ["hook", "cta"]


async def test_deleting_a_scenes_batch_clears_the_session_videos(offline):
    client = offline.client
    session_id = (await client.post("/api/session", json={"scenes": {"a": "x"}, **SMALL})).json()[
        "session_id"
    ]
    batch_id = (
        await client.post("/api/videos/generate-scenes", json={"session_id": session_id})
    ).json()["job_id"]
    job_id = (await scene_jobs(offline, batch_id))["a"]
    await offline.complete(job_id)
    assert (await client.get(f"/api/videos/final/{batch_id}")).status_code == 200
    assert len((await client.get(f"/api/session/{session_id}")).json()["scene_videos"]) == 1
    final = (await client.get(f"/api/batches/{batch_id}")).json()["final"]["filename"]
    assert (await client.delete(f"/api/batches/{batch_id}")).status_code == 200
    session = (await client.get(f"/api/session/{session_id}")).json()
    assert session["scene_videos"] == [] and session["job_id"] is None
    assert not offline.services.outputs.path_for(final).exists()
