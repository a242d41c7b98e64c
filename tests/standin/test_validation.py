"""Each validation error of ComfyUI, with its texts and shapes."""

from __future__ import annotations

from typing import Any

import httpx

from .conftest import WsListener, image_video_graph, run, t2v_graph, upload


async def post(http: httpx.AsyncClient, prompt: Any, **extra: Any) -> httpx.Response:
    return await http.post("/prompt", json={"prompt": prompt, **extra})


def only_error(body: dict[str, Any], node_id: str) -> dict[str, Any]:
    [error] = body["node_errors"][node_id]["errors"]
    return error


async def test_invalid_prompt_and_no_outputs(client: httpx.AsyncClient) -> None:
    graph = image_video_graph()
    del graph["2"]["class_type"]
    response = await post(client, graph)
    assert response.status_code == 400
    assert response.json() == {
        "error": {
            "type": "invalid_prompt",
            "message": "Cannot execute because a node is missing the class_type property.",
            "details": "Node ID '#2'",
            "extra_info": {},
        },
        "node_errors": {},
    }

    unknown = image_video_graph()
    unknown["9"] = {"class_type": "NoSuchNode", "inputs": {}}  # unreachable still counts
    assert (await post(client, unknown)).json()["error"]["message"] == (
        "Cannot execute because node NoSuchNode does not exist."
    )

    graph = image_video_graph()
    del graph["3"]
    assert (await post(client, graph)).json() == {
        "error": {
            "type": "prompt_no_outputs",
            "message": "Prompt has no outputs",
            "details": "",
            "extra_info": {},
        },
        "node_errors": {},
    }
    partial = await post(client, image_video_graph(), partial_execution_targets=["1"])
    assert partial.json()["error"]["type"] == "prompt_no_outputs"


async def test_required_missing_and_ranges(client: httpx.AsyncClient) -> None:
    graph = image_video_graph()
    del graph["1"]["inputs"]["width"]
    body = (await post(client, graph)).json()
    assert only_error(body, "1") == {
        "type": "required_input_missing",
        "message": "Required input is missing",
        "details": "width",
        "extra_info": {"input_name": "width"},
    }
    assert body["node_errors"]["1"]["dependent_outputs"] == ["3"]
    assert body["node_errors"]["1"]["class_type"] == "EmptyImage"
    assert body["error"] == {
        "type": "prompt_outputs_failed_validation",
        "message": "Prompt outputs failed validation",
        "details": "",
        "extra_info": {},
    }

    big = (await post(client, image_video_graph(width=20000))).json()
    assert only_error(big, "1")["type"] == "value_bigger_than_max"
    assert only_error(big, "1")["message"] == "Value 20000 bigger than max of 16384"
    small = (await post(client, image_video_graph(fps=0.5))).json()
    error = only_error(small, "2")
    assert error["message"] == "Value 0.5 smaller than min of 1.0"
    assert error["extra_info"]["input_config"][0] == "FLOAT"


async def test_links(client: httpx.AsyncClient) -> None:
    graph = image_video_graph()
    graph["2"]["inputs"]["images"] = ["1", 0, 1]
    error = only_error((await post(client, graph)).json(), "2")
    assert error["type"] == "bad_linked_input"
    assert error["message"] == "Bad linked input, must be a length-2 list of [node_id, slot_index]"
    assert error["extra_info"]["received_value"] == ["1", 0, 1]

    graph = image_video_graph()
    graph["3"]["inputs"]["video"] = ["1", 0]
    error = only_error((await post(client, graph)).json(), "3")
    assert error["type"] == "return_type_mismatch"
    assert error["details"] == "video, received_type(IMAGE) mismatch input_type(VIDEO)"
    assert error["extra_info"]["linked_node"] == ["1", 0]
    body = (await post(client, graph)).json()
    assert body["error"]["details"] == (
        "Return type mismatch between linked nodes: "
        "video, received_type(IMAGE) mismatch input_type(VIDEO)"
    )

    graph = image_video_graph()
    graph["3"]["inputs"]["video"] = ["99", 0]
    error = only_error((await post(client, graph)).json(), "3")
    assert error["type"] == "exception_during_validation"
    assert error["details"] == "'99'"
    assert error["extra_info"]["exception_type"] == "KeyError"
    assert isinstance(error["extra_info"]["traceback"], list)

    graph = image_video_graph()
    graph["2"]["inputs"]["images"] = ["99", 0]
    body = (await post(client, graph)).json()
    error = only_error(body, "2")
    # Attached to node 2, which raised; linked_node is the link that led there from 3.
    assert error["type"] == "exception_during_inner_validation"
    assert error["details"] == "'99'"
    assert error["extra_info"]["linked_node"] == ["2", 0]

    graph = image_video_graph()
    graph["3"]["inputs"]["video"] = ["2", 3]
    error = only_error((await post(client, graph)).json(), "3")
    assert error["details"] == "tuple index out of range"


async def test_coercion(client: httpx.AsyncClient, ws: WsListener) -> None:
    graph = image_video_graph()
    graph["1"]["inputs"]["width"] = "abc"
    error = only_error((await post(client, graph)).json(), "1")
    assert error == {
        "type": "invalid_input_type",
        "message": "Failed to convert an input value to a INT value",
        "details": "width, abc, invalid literal for int() with base 10: 'abc'",
        "extra_info": {
            "input_name": "width",
            "input_config": ["INT", {"default": 512, "max": 16384, "min": 1, "step": 1}],
            "received_value": "abc",
            "exception_message": "invalid literal for int() with base 10: 'abc'",
        },
    }
    graph = image_video_graph()
    graph["1"]["inputs"]["width"] = "5.5"
    assert only_error((await post(client, graph)).json(), "1")["type"] == "invalid_input_type"

    graph = image_video_graph(width=64.7, fps=8)
    graph["1"]["inputs"]["height"] = {"__value__": "64"}
    graph["3"]["inputs"]["filename_prefix"] = {"__value__": "wrapped/x"}
    _, _, entry = await run(client, ws, graph)
    stored = entry["prompt"][2]
    assert stored["1"]["inputs"]["width"] == 64 and stored["1"]["inputs"]["height"] == 64
    assert stored["2"]["inputs"]["fps"] == 8.0 and isinstance(stored["2"]["inputs"]["fps"], float)
    assert stored["3"]["inputs"]["filename_prefix"] == "wrapped/x"

    _, _, entry = await run(client, ws, t2v_graph())
    assert entry["prompt"][2]["48"]["inputs"]["shift"] == 8.0
    assert entry["prompt"][2]["3"]["inputs"]["denoise"] == 1.0


async def test_combos_v1_checked_v3_not(client: httpx.AsyncClient, ws: WsListener) -> None:
    graph = t2v_graph()
    graph["3"]["inputs"]["sampler_name"] = "nope"
    error = only_error((await post(client, graph)).json(), "3")
    assert error["type"] == "value_not_in_list"
    assert error["details"] == "sampler_name: 'nope' not in (list of length 42)"
    assert error["extra_info"]["input_config"] is None

    graph = t2v_graph()
    graph["38"]["inputs"]["device"] = "gpu"
    error = only_error((await post(client, graph)).json(), "38")
    assert error["details"] == "device: 'gpu' not in ['default', 'cpu']"
    assert error["extra_info"]["input_config"] == [["default", "cpu"], {"advanced": True}]

    # V3 combos pass validation and fail when the node runs.
    _, messages, entry = await run(client, ws, image_video_graph(fmt="webm"))
    failure = messages[-3]
    assert failure["type"] == "execution_error"
    assert failure["data"]["exception_message"] == "'webm' is not a valid VideoContainer\n"
    graph = image_video_graph()
    graph["3"]["inputs"]["codec"] = "vp9"
    _, messages, _ = await run(client, ws, graph)
    assert messages[-3]["data"]["exception_message"] == "Only H264 codec is supported for now\n"


async def test_missing_model_fails_like_comfyui(bare_standin) -> None:
    async with httpx.AsyncClient(base_url=bare_standin.url) as http:
        body = (await post(http, t2v_graph())).json()
    assert body["error"]["type"] == "prompt_outputs_failed_validation"
    unet = only_error(body, "37")
    assert unet["type"] == "value_not_in_list"
    assert unet["details"] == "unet_name: 'wan2.2_ti2v_5B_fp16.safetensors' not in []"
    assert unet["extra_info"]["input_config"] == [[], {}]
    vae = only_error(body, "39")
    assert vae["details"] == "vae_name: 'wan2.2_vae.safetensors' not in ['pixel_space']"
    assert set(body["node_errors"]) == {"37", "38", "39", "60"}
    assert all(e["dependent_outputs"] == ["58"] for e in body["node_errors"].values())


async def test_custom_validation(client: httpx.AsyncClient) -> None:
    graph = {
        "1": {"class_type": "LoadImage", "inputs": {"image": "nope.png"}},
        "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "img"}},
    }
    error = only_error((await post(client, graph)).json(), "1")
    assert error == {
        "type": "custom_validation_failed",
        "message": "Custom validation failed for node",
        "details": "image - Invalid image file: nope.png",
        "extra_info": {"input_name": "image"},
    }
    await upload(client, "there.png", b"\x89PNG", subfolder="deep")
    graph["1"]["inputs"]["image"] = "deep/there.png"
    assert (await post(client, graph)).status_code == 200
    graph["1"]["inputs"]["image"] = "there.png [output]"
    assert (await post(client, graph)).status_code == 400

    video = {
        "1": {"class_type": "LoadVideo", "inputs": {"file": "nope.mp4"}},
        "2": {
            "class_type": "SaveVideo",
            "inputs": {
                "video": ["1", 0],
                "filename_prefix": "v",
                "format": "auto",
                "codec": "auto",
            },
        },
    }
    error = only_error((await post(client, video)).json(), "1")
    assert error["details"] == "file - Invalid video file: nope.mp4"


async def test_partial_success_and_unreachable_nodes(
    client: httpx.AsyncClient, ws: WsListener
) -> None:
    graph = image_video_graph()
    graph["4"] = {
        "class_type": "EmptyImage",
        "inputs": {"width": 0, "height": 8, "batch_size": 1, "color": 0},
    }
    graph["5"] = {"class_type": "SaveImage", "inputs": {"images": ["4", 0], "filename_prefix": "i"}}
    graph["9"] = {"class_type": "ImageScale", "inputs": {"width": "junk"}}  # never validated
    response = await post(client, graph, client_id="tester", prompt_id="partial")
    assert response.status_code == 200
    body = response.json()
    assert set(body["node_errors"]) == {"4"}
    assert body["node_errors"]["4"]["dependent_outputs"] == ["5"]
    await ws.run_to_end("partial")
    entry = (await client.get("/history/partial")).json()["partial"]
    assert entry["prompt"][4] == ["3"]
    assert set(entry["outputs"]) == {"3"}
