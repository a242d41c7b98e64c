"""Shapes and status codes of every route the stand-in serves."""

from __future__ import annotations

import re
import uuid

import httpx
import pytest
from websockets.asyncio.client import connect

from comfyui.standin import start_standin

from .conftest import (
    WsListener,
    image_video_graph,
    png_bytes,
    run,
    start_blocker,
    submit,
    upload,
)


async def test_prompt_answer_and_number_counter(client: httpx.AsyncClient, ws: WsListener) -> None:
    first = await client.post(
        "/prompt", json={"prompt": image_video_graph(), "client_id": "tester"}
    )
    assert first.status_code == 200
    body = first.json()
    assert set(body) == {"prompt_id", "number", "node_errors"}
    assert body["number"] == 0 and body["node_errors"] == {}
    assert uuid.UUID(body["prompt_id"])  # generated, dashed

    bad = await client.post("/prompt", json={"prompt": {"1": {"class_type": "Nope", "inputs": {}}}})
    assert bad.status_code == 400
    explicit = await client.post(
        "/prompt", json={"prompt": image_video_graph(color=1), "number": 5, "prompt_id": 123}
    )
    assert explicit.json()["number"] == 5.0 and isinstance(explicit.json()["number"], float)
    assert explicit.json()["prompt_id"] == "123"
    front = await client.post("/prompt", json={"prompt": image_video_graph(color=2), "front": True})
    # The failed prompt used number 1; the explicit number did not move the counter.
    assert front.json()["number"] == -2
    after = await client.post("/prompt", json={"prompt": image_video_graph(color=3)})
    assert after.json()["number"] == 3


async def test_prompt_errors(client: httpx.AsyncClient) -> None:
    missing = await client.post("/prompt", json={"client_id": "x"})
    assert missing.status_code == 400
    assert missing.json() == {
        "error": {
            "type": "no_prompt",
            "message": "No prompt provided",
            "details": "No prompt provided",
            "extra_info": {},
        },
        "node_errors": {},
    }
    not_json = await client.post(
        "/prompt", content=b"{nope", headers={"Content-Type": "application/json"}
    )
    assert not_json.status_code == 500
    bad_number = await client.post("/prompt", json={"prompt": image_video_graph(), "number": "x"})
    assert bad_number.status_code == 500
    not_object = await client.post("/prompt", json={"prompt": ["a"]})
    assert not_object.status_code == 500


async def test_get_prompt_and_queue_shapes(client: httpx.AsyncClient, ws: WsListener) -> None:
    assert (await client.get("/prompt")).json() == {"exec_info": {"queue_remaining": 0}}
    blocker = await start_blocker(client)
    await ws.until(lambda m: m["type"] == "progress")
    pending = await submit(client, image_video_graph(), extra_data={"api_key_comfy_org": "k"})
    assert (await client.get("/prompt")).json() == {"exec_info": {"queue_remaining": 2}}
    queue = (await client.get("/queue")).json()
    assert set(queue) == {"queue_running", "queue_pending"}
    [running] = queue["queue_running"]
    assert running[1] == blocker and len(running) == 5
    [waiting] = queue["queue_pending"]
    assert waiting[1] == pending and waiting[3] == {"api_key_comfy_org": "k", "client_id": "tester"}
    assert waiting[4] == ["3"]
    await client.post("/interrupt", json={})
    await ws.run_to_end(pending)
    history = (await client.get(f"/history/{pending}")).json()[pending]
    assert history["prompt"][3] == {"client_id": "tester"}  # api key stripped from history only


async def test_post_queue_and_interrupt_answer_empty_200(client: httpx.AsyncClient) -> None:
    for body in ({"clear": True}, {"delete": ["nope"]}, {}):
        response = await client.post("/queue", json=body)
        assert response.status_code == 200 and response.content == b""
    assert (await client.post("/queue", content=b"x")).status_code == 500
    for content in (b"", b"not json", b'{"prompt_id": "unknown"}'):
        response = await client.post("/interrupt", content=content)
        assert response.status_code == 200 and response.content == b""
    assert (await client.post("/interrupt", json=["list"])).status_code == 500


async def test_history_routes(client: httpx.AsyncClient, ws: WsListener) -> None:
    ids = []
    for color in range(4):
        prompt_id, _, _ = await run(client, ws, image_video_graph(color=color))
        ids.append(prompt_id)
    assert list((await client.get("/history")).json()) == ids
    assert list((await client.get("/history", params={"max_items": 2})).json()) == ids[2:]
    assert (
        list((await client.get("/history", params={"offset": 1, "max_items": 2})).json())
        == ids[1:3]
    )
    assert list((await client.get("/history", params={"offset": 3})).json()) == ids[3:]
    assert (await client.get("/history", params={"max_items": "x"})).status_code == 500
    unknown = await client.get("/history/unknown")
    assert unknown.status_code == 200 and unknown.json() == {}
    entry = (await client.get(f"/history/{ids[0]}")).json()[ids[0]]
    assert set(entry) == {"prompt", "outputs", "status", "meta"}

    deleted = await client.post("/history", json={"delete": [ids[0], "nope"]})
    assert deleted.status_code == 200 and deleted.content == b""
    assert list((await client.get("/history")).json()) == ids[1:]
    await client.post("/history", json={"clear": True})
    assert (await client.get("/history")).json() == {}


async def test_view_rules(client: httpx.AsyncClient, ws: WsListener) -> None:
    _, _, entry = await run(client, ws, image_video_graph())
    saved = entry["outputs"]["3"]["images"][0]
    params = {"filename": saved["filename"], "subfolder": saved["subfolder"], "type": "output"}
    response = await client.get("/view", params=params)
    assert response.status_code == 200
    assert response.headers["content-type"] == "video/mp4"
    assert response.headers["content-disposition"] == f'filename="{saved["filename"]}"'
    assert response.headers["accept-ranges"] == "bytes"
    assert response.content[4:8] == b"ftyp"
    ranged = await client.get("/view", params=params, headers={"Range": "bytes=0-9"})
    assert ranged.status_code == 206 and len(ranged.content) == 10
    assert ranged.headers["content-range"].startswith("bytes 0-9/")
    head = await client.head("/view", params=params)
    assert head.status_code == 200

    annotated = await client.get(
        "/view",
        params={
            "filename": f"{saved['filename']} [output]",
            "subfolder": "capture",
            "type": "input",
        },
    )
    assert annotated.status_code == 200
    assert (await client.get("/view")).status_code == 404
    assert (await client.get("/view", params={"filename": " [output]"})).status_code == 400
    assert (await client.get("/view", params={"filename": "/etc/passwd"})).status_code == 400
    assert (await client.get("/view", params={"filename": "../x.mp4"})).status_code == 400
    assert (
        await client.get("/view", params={"filename": "x", "type": "models"})
    ).status_code == 400
    escape = await client.get("/view", params={"filename": "passwd", "subfolder": "../../etc"})
    assert escape.status_code == 403
    assert (await client.get("/view", params={"filename": "missing.mp4"})).status_code == 404


async def test_view_image_preview_and_channels(client: httpx.AsyncClient) -> None:
    await upload(client, "pic.png", png_bytes())
    base = {"filename": "pic.png", "type": "input"}
    plain = await client.get("/view", params=base)
    assert plain.headers["content-type"] == "image/png"
    preview = await client.get("/view", params={**base, "preview": "jpeg;50"})
    assert preview.headers["content-type"] == "image/jpeg"
    assert (await client.get("/view", params={**base, "channel": "rgb"})).status_code == 200
    assert (await client.get("/view", params={**base, "channel": "a"})).status_code == 200


async def test_upload_naming(client: httpx.AsyncClient) -> None:
    first = await upload(client, "start.png", png_bytes())
    assert first.status_code == 200
    assert first.json() == {"name": "start.png", "subfolder": "", "type": "input"}
    same = await upload(client, "start.png", png_bytes())
    assert same.json()["name"] == "start.png"
    other = await upload(client, "start.png", png_bytes(color=(0, 0, 255)))
    assert other.json()["name"] == "start (1).png"
    again = await upload(client, "start.png", png_bytes(color=(0, 0, 255)))
    assert again.json()["name"] == "start (1).png"
    overwrite = await upload(client, "start.png", png_bytes(color=(0, 255, 0)), overwrite="true")
    assert overwrite.json()["name"] == "start.png"
    nested = await upload(client, "clip.mp4", b"\x00\x00\x00\x20ftypisom", subfolder="sub/dir")
    assert nested.json() == {"name": "clip.mp4", "subfolder": "sub/dir", "type": "input"}
    to_output = await upload(client, "o.png", png_bytes(), type="output")
    assert to_output.json()["type"] == "output"
    assert (await upload(client, "x.png", png_bytes(), type="models")).status_code == 500
    assert (await client.post("/upload/image", data={"subfolder": "a"})).status_code == 400
    escape = await upload(client, "x.png", png_bytes(), subfolder="../../outside")
    assert escape.status_code == 400


async def test_object_info(client: httpx.AsyncClient) -> None:
    info = (await client.get("/object_info")).json()
    # The FastWAN graph's classes, our parameter nodes, and the loaders the editor reads.
    fastwan = {"KSampler", "SaveVideo", "UNETLoader", "VAELoader", "CLIPLoader", "LoadImage"}
    ours = {f"ApiInput{kind}" for kind in ("Text", "Int", "Float", "Bool", "Seed", "Choice")}
    editor = {"CheckpointLoaderSimple", "LoraLoader", "EmptyLatentImage"}
    assert fastwan | ours | {"ApiInputImage", "ApiInputVideo"} | editor <= set(info)
    unet = info["UNETLoader"]["input"]["required"]["unet_name"][0]
    assert unet == ["wan2.2_ti2v_5B_fp16.safetensors"]
    assert info["VAELoader"]["input"]["required"]["vae_name"][0] == [
        "wan2.2_vae.safetensors",
        "pixel_space",
    ]
    one = (await client.get("/object_info/KSampler")).json()
    assert list(one) == ["KSampler"] and one["KSampler"]["output"] == ["LATENT"]
    assert (await client.get("/object_info/NoSuchNode")).json() == {}
    await upload(client, "b.png", png_bytes())
    await upload(client, "a.mp4", b"fake")
    load_image = (await client.get("/object_info/LoadImage")).json()["LoadImage"]
    assert load_image["input"]["required"]["image"][0] == ["b.png"]
    load_video = (await client.get("/object_info/LoadVideo")).json()["LoadVideo"]
    assert load_video["input"]["required"]["file"][1]["options"] == ["a.mp4"]


async def test_system_stats_features_models(client: httpx.AsyncClient) -> None:
    stats = (await client.get("/system_stats")).json()
    assert set(stats["system"]) == {
        "os",
        "ram_total",
        "ram_free",
        "comfyui_version",
        "required_frontend_version",
        "installed_templates_version",
        "required_templates_version",
        "python_version",
        "pytorch_version",
        "embedded_python",
        "argv",
    }
    assert stats["system"]["comfyui_version"] == "0.3.64"
    [device] = stats["devices"]
    assert set(device) == {
        "name",
        "type",
        "index",
        "vram_total",
        "vram_free",
        "torch_vram_total",
        "torch_vram_free",
    }
    assert "standin" in device["name"]
    assert (await client.get("/features")).json() == {
        "supports_preview_metadata": True,
        "max_upload_size": 104857600.0,
    }
    folders = (await client.get("/models")).json()
    assert {"checkpoints", "loras", "vae", "text_encoders", "diffusion_models"} <= set(folders)
    assert (await client.get("/models/loras")).json() == [
        "Wan2_2_5B_FastWanFullAttn_lora_rank_128_bf16.safetensors"
    ]
    assert (await client.get("/models/checkpoints")).json() == []
    assert (await client.get("/models/unet")).status_code == 404
    assert (await client.get("/models/nope")).status_code == 404
    assert (await client.get("/embeddings")).json() == []
    assert (await client.get("/extensions")).json() == []


async def test_models_list_is_sorted_and_recursive(bare_standin) -> None:
    models = bare_standin.data_dir / "models"
    for rel in ("loras/b.safetensors", "loras/a.safetensors", "loras/sub/c.pt", "loras/skip.txt"):
        (models / rel).parent.mkdir(parents=True, exist_ok=True)
        (models / rel).write_bytes(b"x")
    (models / "clip").mkdir()
    (models / "clip" / "legacy.safetensors").write_bytes(b"x")
    async with httpx.AsyncClient(base_url=bare_standin.url) as http:
        assert (await http.get("/models/loras")).json() == [
            "a.safetensors",
            "b.safetensors",
            "sub/c.pt",
        ]
        assert (await http.get("/models/text_encoders")).json() == ["legacy.safetensors"]


async def test_free_memory_resets_the_cache(client: httpx.AsyncClient, ws: WsListener) -> None:
    graph = image_video_graph()
    await run(client, ws, graph)
    response = await client.post("/free", json={"free_memory": True, "unload_models": True})
    assert response.status_code == 200 and response.content == b""
    _, messages, _ = await run(client, ws, graph)
    cached = next(m for m in messages if m["type"] == "execution_cached")
    assert cached["data"]["nodes"] == []
    assert (await client.post("/free", content=b"x")).status_code == 500


async def test_api_prefix(client: httpx.AsyncClient, standin) -> None:
    for path in (
        "/prompt",
        "/queue",
        "/history",
        "/object_info/KSampler",
        "/system_stats",
        "/features",
        "/models",
        "/models/vae",
        "/embeddings",
    ):
        plain, prefixed = await client.get(path), await client.get("/api" + path)
        assert prefixed.status_code == plain.status_code == 200
        if path not in ("/system_stats",):
            assert prefixed.json() == plain.json()
    async with connect(standin.ws_url.replace("/ws", "/api/ws") + "?clientId=api") as sock:
        hello = WsListener(sock)
        assert (await hello.next())["data"]["sid"] == "api"
        await hello.close()
    assert (await client.get("/api/_standin/state")).status_code == 404


async def test_origin_check(client: httpx.AsyncClient, standin) -> None:
    host = f"127.0.0.1:{standin.port}"
    bad = await client.get("/prompt", headers={"Host": host, "Origin": "http://evil.example"})
    assert bad.status_code == 403 and bad.content == b""
    good = await client.get("/prompt", headers={"Host": host, "Origin": f"http://{host}"})
    assert good.status_code == 200
    no_port = await client.get("/prompt", headers={"Host": host, "Origin": "http://127.0.0.1"})
    assert no_port.status_code == 200
    remote = await client.get("/prompt", headers={"Host": "example.com", "Origin": "http://x.y"})
    assert remote.status_code == 200
    options = await client.options("/prompt", headers={"Host": host, "Origin": f"http://{host}"})
    assert options.status_code == 200 and options.content == b""


async def test_body_limit_413(tmp_path) -> None:
    async with await start_standin(data_dir=tmp_path, max_upload_mb=0.01) as small:
        async with httpx.AsyncClient(base_url=small.url) as http:
            big = await http.post("/prompt", json={"prompt": {}, "pad": "x" * 20000})
            assert big.status_code == 413
            upload_big = await upload(http, "big.png", b"x" * 20000)
            assert upload_big.status_code == 413


async def test_websocket_hello_and_feature_flags(standin) -> None:
    async with connect(standin.ws_url) as sock:
        listener = WsListener(sock)
        hello = await listener.next()
        assert hello == {
            "type": "status",
            "data": {"status": {"exec_info": {"queue_remaining": 0}}, "sid": hello["data"]["sid"]},
        }
        assert re.fullmatch(r"[0-9a-f]{32}", hello["data"]["sid"])
        await sock.send('{"type": "feature_flags", "data": {"supports_preview_metadata": true}}')
        reply = await listener.next()
        assert reply == {
            "type": "feature_flags",
            "data": {"supports_preview_metadata": True, "max_upload_size": 104857600.0},
        }
        await listener.close()


@pytest.mark.parametrize("path", ["/", "/_standin/state"])
async def test_index_and_state(client: httpx.AsyncClient, path: str) -> None:
    response = await client.get(path)
    assert response.status_code == 200
    if path == "/_standin/state":
        state = response.json()
        assert state["standin"] is True and state["queue"] == {"running": [], "pending": []}
