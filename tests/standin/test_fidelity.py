"""Replays the runs recorded on a real ComfyUI 0.3.64 and compares the stand-in's answers.

For every scenario: the sequence of websocket message types, the keys of every message
(recursively), the /prompt status and body keys, and the keys of the history entry. The
validation scenarios must return the very same error body.
"""

from __future__ import annotations

import copy
import io
import json
from pathlib import Path
from typing import Any

import av
import httpx
from PIL import Image
from websockets.asyncio.client import connect

from comfyui.standin import DataDirs, start_standin, write_placeholder_models
from tests.support import require_shared

from .conftest import MANIFEST, REFERENCE, WsListener, is_done

require_shared(REFERENCE)

SCENARIOS = [
    "video_ok",
    "video_cached",
    "validation_error",
    "unknown_node",
    "no_outputs",
    "runtime_error",
    "interrupted",
]
REJECTED = {"validation_error", "unknown_node", "no_outputs"}


def load(name: str) -> dict[str, Any]:
    return json.loads((REFERENCE / name).read_text())


def recorded_messages(entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The recorded websocket messages (two recording formats)."""
    out = []
    for entry in entries:
        if "msg" in entry:
            out.append(entry["msg"])
        elif entry.get("kind") == "1":
            out.append(json.loads(entry["data"]))
    return out


def shape(value: Any) -> Any:
    """Keys all the way down; lists of scalars are just "list" (their length may differ)."""
    if isinstance(value, dict):
        return {key: shape(item) for key, item in value.items()}
    if isinstance(value, list):
        if any(isinstance(item, (dict, list)) for item in value):
            return [shape(item) for item in value]
        return "list"
    return None


def assert_same_messages(ours: list[dict[str, Any]], recorded: list[dict[str, Any]]) -> None:
    assert [m["type"] for m in ours] == [m["type"] for m in recorded]
    for index, (mine, theirs) in enumerate(zip(ours, recorded, strict=True)):
        assert shape(mine) == shape(theirs), (index, mine["type"], mine, theirs)


def executing(messages: list[dict[str, Any]]) -> list[Any]:
    return [m["data"]["node"] for m in messages if m["type"] == "executing"]


async def open_socket(base_url: str, client_id: str) -> tuple[WsListener, dict[str, Any]]:
    ws_url = base_url.replace("http://", "ws://") + f"/ws?clientId={client_id}"
    listener = WsListener(await connect(ws_url, max_size=None))
    return listener, await listener.next()


async def test_recorded_scenarios(tmp_path: Path) -> None:
    transcripts = load("transcripts.json")
    async with (
        await start_standin(data_dir=tmp_path) as standin,
        httpx.AsyncClient(base_url=standin.url, timeout=30) as http,
    ):
        for name in SCENARIOS:
            scenario = transcripts[name]
            client_id = f"fidelity-{name}"
            request = copy.deepcopy(scenario["request"])
            request["client_id"] = client_id
            listener, hello = await open_socket(standin.url, client_id)
            if name == "interrupted":
                # The real EmptyImage took 1.6 s, so the interrupt landed while it ran.
                await http.post(
                    "/_standin/faults/slow", json={"class_type": "EmptyImage", "seconds": 1.0}
                )
            response = await http.post("/prompt", json=request)
            expected = scenario["response"]
            assert response.status_code == expected["status"], name
            body = response.json()
            assert set(body) == set(expected["body"]), name
            if name in REJECTED:
                assert body == expected["body"], name
                # Nothing was sent for it: the next message is the one this clear causes.
                await http.post("/queue", json={"clear": True})
                nothing_before = await listener.next()
                assert nothing_before["type"] == "status", name
                messages = []
            else:
                assert body["number"] == expected["body"]["number"], name
                prompt_id = body["prompt_id"]
                if name == "interrupted":
                    messages = await listener.until(lambda m: m["type"] == "execution_start")
                    await http.post("/interrupt", json={"prompt_id": prompt_id})
                    messages += await listener.run_to_end(prompt_id)
                else:
                    messages = await listener.run_to_end(prompt_id)
                history = (await http.get(f"/history/{prompt_id}")).json()
                assert shape(history) == shape(scenario["history"]), name
                recorded_entry = next(iter(scenario["history"].values()))
                assert history[prompt_id]["prompt"][2] == recorded_entry["prompt"][2], name
                assert history[prompt_id]["outputs"] == recorded_entry["outputs"], name
            recorded = recorded_messages(scenario["ws"])
            assert_same_messages([hello, *messages], recorded)
            assert executing([hello, *messages]) == executing(recorded), name
            await listener.close()


def png(width: int, height: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (90, 160, 200)).save(buffer, format="PNG")
    return buffer.getvalue()


async def run_wan(
    http: httpx.AsyncClient, url: str, transcript: dict[str, Any], client_id: str
) -> None:
    request = copy.deepcopy(transcript["request"])
    request["client_id"] = client_id
    listener, hello = await open_socket(url, client_id)
    response = await http.post("/prompt", json=request)
    assert response.status_code == transcript["response"]["status"]
    body = response.json()
    assert set(body) == set(transcript["response"]["body"])
    prompt_id = body["prompt_id"]
    messages = await listener.until(lambda m: is_done(m, prompt_id))
    recorded = recorded_messages(transcript["ws"])
    assert_same_messages([hello, *messages], recorded)
    assert executing(messages) == executing(recorded)
    assert [
        (m["data"]["value"], m["data"]["max"]) for m in messages if m["type"] == "progress"
    ] == [(m["data"]["value"], m["data"]["max"]) for m in recorded if m["type"] == "progress"]
    history = (await http.get(f"/history/{prompt_id}")).json()
    assert shape(history[prompt_id]) == shape(next(iter(transcript["history"]["body"].values())))
    for view in transcript["view"]:
        saved = history[prompt_id]["outputs"][view["node"]]["images"][0]
        answer = await http.get("/view", params=saved)
        assert answer.status_code == view["status"]
        assert answer.headers["content-type"] == view["content_type"]
        assert answer.headers["content-disposition"] == f'filename="{saved["filename"]}"'
        with av.open(io.BytesIO(answer.content)) as container:
            stream = container.streams.video[0]
            frames = sum(1 for _ in container.decode(stream))
            probe = {
                "codec": stream.codec_context.name,
                "width": stream.codec_context.width,
                "height": stream.codec_context.height,
                "fps": float(stream.average_rate),
                "decoded_frames": frames,
            }
        assert probe == {k: view["probe"][k] for k in probe}
    await listener.close()


async def test_recorded_wan_runs(tmp_path: Path) -> None:
    data_dir = tmp_path / "wan"
    write_placeholder_models(DataDirs(data_dir), MANIFEST)
    async with (
        await start_standin(data_dir=data_dir) as standin,
        httpx.AsyncClient(base_url=standin.url, timeout=30) as http,
    ):
        await run_wan(http, standin.url, load("wan_t2v_transcript.json"), "wan-t2v")
        await run_wan(http, standin.url, load("wan_t2v_cached_transcript.json"), "wan-cached")

        i2v = load("wan_i2v_transcript.json")
        freed = await http.post("/free", json={"unload_models": True, "free_memory": True})
        assert freed.status_code == i2v["free"]["status"]
        uploaded = await http.post(
            "/upload/image", files={"image": ("tiny_rig_start.png", png(64, 64))}
        )
        assert uploaded.status_code == i2v["upload"]["status"]
        assert uploaded.json() == i2v["upload"]["body"]
        await run_wan(http, standin.url, i2v, "wan-i2v")
