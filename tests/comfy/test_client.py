"""The ComfyUI client against respx: shapes from comfyui-reference/protocol.md."""

import json

import httpx
import pytest
import respx

from proxy.comfy import ComfyClient, OutputFile
from proxy.errors import ComfyFileMissing, ComfyProtocolError, ComfyUnavailable, PromptRejected

BASE = "http://comfy.test:8188"


@pytest.fixture
async def client():
    async with httpx.AsyncClient() as http:
        yield ComfyClient(BASE, http)


@respx.mock
async def test_submit_sends_our_prompt_id_and_client_id(client):
    route = respx.post(f"{BASE}/prompt").mock(
        return_value=httpx.Response(200, json={"prompt_id": "p1", "number": 5.0, "node_errors": {}})
    )
    accepted = await client.submit({"1": {}}, client_id="c1", prompt_id="p1")
    body = json.loads(route.calls[0].request.content)
    assert body == {"prompt": {"1": {}}, "client_id": "c1", "prompt_id": "p1"}
    assert accepted.prompt_id == "p1" and accepted.number == 5.0


@respx.mock
async def test_a_400_becomes_a_readable_rejection(client):
    respx.post(f"{BASE}/prompt").mock(
        return_value=httpx.Response(
            400,
            json={
                "error": {
                    "type": "prompt_outputs_failed_validation",
                    "message": "Prompt outputs failed validation",
                    "details": "",
                    "extra_info": {},
                },
                "node_errors": {
                    "55": {
                        "errors": [
                            {
                                "type": "value_smaller_than_min",
                                "message": "Value 0 smaller than min of 32",
                                "details": "width",
                                "extra_info": {"input_name": "width"},
                            }
                        ],
                        "dependent_outputs": ["58"],
                        "class_type": "Wan22ImageToVideoLatent",
                    },
                    "37": {
                        "errors": [
                            {
                                "type": "value_not_in_list",
                                "message": "Value not in list",
                                "details": "unet_name: 'x.safetensors' not in []",
                                "extra_info": {
                                    "input_name": "unet_name",
                                    "received_value": "x.safetensors",
                                },
                            }
                        ],
                        "dependent_outputs": ["58"],
                        "class_type": "UNETLoader",
                    },
                },
            },
        )
    )
    with pytest.raises(PromptRejected) as err:
        await client.submit({}, client_id="c")
    text = err.value.message
    assert "node 55 (Wan22ImageToVideoLatent) input 'width': Value 0 smaller than min of 32" in text
    assert "models/diffusion_models folder" in text
    assert err.value.node_errors["55"]["class_type"] == "Wan22ImageToVideoLatent"


@respx.mock
async def test_whole_prompt_errors_are_readable(client):
    respx.post(f"{BASE}/prompt").mock(
        return_value=httpx.Response(
            400,
            json={
                "error": {
                    "type": "invalid_prompt",
                    "message": "Cannot execute because node Foo does not exist.",
                    "details": "Node ID '#1'",
                    "extra_info": {},
                },
                "node_errors": {},
            },
        )
    )
    with pytest.raises(PromptRejected, match="node Foo does not exist.: Node ID '#1'"):
        await client.submit({}, client_id="c")


@respx.mock
async def test_unreachable_and_broken_backends(client):
    respx.get(f"{BASE}/queue").mock(side_effect=httpx.ConnectError("refused"))
    with pytest.raises(ComfyUnavailable, match="cannot be reached"):
        await client.queue()
    respx.get(f"{BASE}/history/p").mock(return_value=httpx.Response(500, text="boom"))
    with pytest.raises(ComfyProtocolError, match="HTTP 500"):
        await client.history("p")
    respx.get(f"{BASE}/system_stats").mock(side_effect=httpx.ReadTimeout("slow"))
    with pytest.raises(ComfyUnavailable, match="in time"):
        await client.system_stats()


@respx.mock
async def test_queue_is_sorted_by_number(client):
    respx.get(f"{BASE}/queue").mock(
        return_value=httpx.Response(
            200,
            json={
                "queue_running": [[3, "run", {}, {}, []]],
                "queue_pending": [
                    [9, "b", {}, {}, []],
                    [-2, "front", {}, {}, []],
                    [4, "a", {}, {}, []],
                ],
            },
        )
    )
    state = await client.queue()
    assert state.running == ["run"] and state.pending == ["front", "a", "b"]
    assert "a" in state and "zzz" not in state and state.length == 4


@respx.mock
async def test_history_finds_videos_under_images_with_animated(client):
    entry = {
        "prompt": [0, "p", {}, {}, ["58"]],
        "outputs": {
            "58": {
                "images": [
                    {"filename": "ComfyUI_00010_.mp4", "subfolder": "video", "type": "output"}
                ],
                "animated": [True],
            },
            "9": {"images": [{"filename": "x.png", "subfolder": "", "type": "temp"}]},
        },
        "status": {"status_str": "success", "completed": True, "messages": []},
        "meta": {},
    }
    respx.get(f"{BASE}/history/p").mock(
        return_value=httpx.Response(200, text=json.dumps({"p": entry}))
    )
    respx.get(f"{BASE}/history/unknown").mock(return_value=httpx.Response(200, json={}))
    parsed = await client.history("p")
    assert parsed is not None and parsed.succeeded
    video = [f for f in parsed.outputs if f.is_video]
    assert video[0].filename == "ComfyUI_00010_.mp4" and video[0].subfolder == "video"
    assert await client.history("unknown") is None


@respx.mock
async def test_history_reads_errors_and_interrupts(client):
    err = {
        "status": {
            "status_str": "error",
            "completed": False,
            "messages": [
                ["execution_start", {"prompt_id": "p"}],
                [
                    "execution_error",
                    {
                        "prompt_id": "p",
                        "node_id": "3",
                        "node_type": "KSampler",
                        "exception_type": "torch.OutOfMemoryError",
                        "exception_message": "Allocation on device \n",
                    },
                ],
            ],
        },
        "outputs": {},
    }
    respx.get(f"{BASE}/history/p").mock(return_value=httpx.Response(200, json={"p": err}))
    parsed = await client.history("p")
    assert parsed is not None and not parsed.succeeded
    assert "ran out of GPU memory in node 3 (KSampler)" in parsed.failure.describe()


@respx.mock
async def test_nan_in_json_is_tolerated(client):
    respx.get(f"{BASE}/system_stats").mock(
        return_value=httpx.Response(200, text='{"system": {"x": NaN}, "devices": []}')
    )
    assert (await client.system_stats())["devices"] == []


@respx.mock
async def test_download_streams_to_disk_and_leaves_nothing_on_failure(client, tmp_path):
    respx.get(
        f"{BASE}/view", params={"filename": "a.mp4", "subfolder": "video", "type": "output"}
    ).mock(return_value=httpx.Response(200, content=b"x" * 3_000_000))
    dest = tmp_path / "out.mp4"
    size = await client.download(
        OutputFile(node_id="58", filename="a.mp4", subfolder="video"), dest
    )
    assert size == 3_000_000 and dest.read_bytes() == b"x" * 3_000_000
    assert not (tmp_path / "out.mp4.part").exists()
    respx.get(f"{BASE}/view", params={"filename": "gone.mp4"}).mock(
        return_value=httpx.Response(404)
    )
    with pytest.raises(ComfyFileMissing):
        await client.download(OutputFile(node_id="58", filename="gone.mp4"), tmp_path / "gone.mp4")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.mp4"]


@respx.mock
async def test_upload_uses_the_name_comfyui_returns(client, tmp_path):
    src = tmp_path / "in.png"
    src.write_bytes(b"png")
    respx.post(f"{BASE}/upload/image").mock(
        return_value=httpx.Response(
            200, json={"name": "cat (1).png", "subfolder": "fastwan", "type": "input"}
        )
    )
    assert await client.upload(src, "cat.png") == "fastwan/cat (1).png"


@respx.mock
async def test_interrupt_names_the_prompt(client):
    route = respx.post(f"{BASE}/interrupt").mock(return_value=httpx.Response(200))
    await client.interrupt("p9")
    assert json.loads(route.calls[0].request.content) == {"prompt_id": "p9"}
