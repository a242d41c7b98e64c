"""Our API input nodes (custom_nodes/api_inputs) on the stand-in: served schemas, graphs that
run through them, and ComfyUI's validation of their links and values."""

from __future__ import annotations

import copy
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import httpx
import pytest

from comfyui.standin import apiinputs, nodes

from .conftest import REPO, WsListener, png_bytes, run, submit, t2v_graph, types_of, upload
from .test_media import fetch_video, mp4_bytes

CLASSES = [
    "ApiInputText",
    "ApiInputInt",
    "ApiInputFloat",
    "ApiInputBool",
    "ApiInputSeed",
    "ApiInputChoice",
    "ApiInputImage",
    "ApiInputVideo",
]


def error_of(messages: list[dict[str, Any]]) -> dict[str, Any]:
    [error] = [m["data"] for m in messages if m["type"] == "execution_error"]
    return error


async def test_object_info_is_built_from_the_package(client: httpx.AsyncClient) -> None:
    await upload(client, "b.png", png_bytes())
    await upload(client, "a.mp4", b"fake")
    info = (await client.get("/object_info")).json()
    assert [name for name in info if name.startswith("ApiInput")] == CLASSES
    for name in CLASSES:
        entry = info[name]
        assert (await client.get(f"/object_info/{name}")).json() == {name: entry}
        assert list(entry) == [
            "input",
            "input_order",
            "output",
            "output_is_list",
            "output_name",
            "name",
            "display_name",
            "description",
            "python_module",
            "category",
            "output_node",
            "output_tooltips",
        ]
        assert entry["name"] == name and entry["display_name"].startswith("API Input: ")
        assert (entry["category"], entry["python_module"]) == (
            "api/inputs",
            "custom_nodes.api_inputs",
        )
        assert entry["output_node"] is False
        assert entry["output_is_list"] == [False] * len(entry["output"])
        assert entry["input_order"] == {k: list(v) for k, v in entry["input"].items()}
        expected = apiinputs.node_info(name, apiinputs.classes()[name], {})
        files = apiinputs.FILE_INPUTS.get(name)
        if files is not None:
            expected["input"]["required"][files[0]][0] = {"image": ["b.png"], "video": ["a.mp4"]}[
                files[1]
            ]
        assert {**entry, "display_name": name} == expected

    outputs = {name: (info[name]["output"], info[name]["output_name"]) for name in CLASSES}
    assert outputs == {
        "ApiInputText": (["STRING"], ["value"]),
        "ApiInputInt": (["INT"], ["value"]),
        "ApiInputFloat": (["FLOAT"], ["value"]),
        "ApiInputBool": (["BOOLEAN"], ["value"]),
        "ApiInputSeed": (["INT"], ["seed"]),
        "ApiInputChoice": (["*"], ["value"]),
        "ApiInputImage": (["IMAGE", "MASK"], ["image", "mask"]),
        "ApiInputVideo": (["VIDEO"], ["video"]),
    }
    value_inputs = {
        name: {k: v[0] for k, v in info[name]["input"]["required"].items()} for name in CLASSES
    }
    assert value_inputs == {
        "ApiInputText": {"name": "STRING", "value": "STRING"},
        "ApiInputInt": {"name": "STRING", "value": "INT"},
        "ApiInputFloat": {"name": "STRING", "value": "FLOAT"},
        "ApiInputBool": {"name": "STRING", "value": "BOOLEAN"},
        "ApiInputSeed": {"name": "STRING", "value": "INT"},
        "ApiInputChoice": {"name": "STRING", "choices": "STRING", "value": "STRING"},
        "ApiInputImage": {"name": "STRING", "image": ["b.png"]},
        "ApiInputVideo": {"name": "STRING", "file": ["a.mp4"]},
    }
    seed = info["ApiInputSeed"]["input"]["required"]["value"][1]
    assert (seed["min"], seed["max"], seed["control_after_generate"]) == (0, 2**64 - 1, True)
    assert info["ApiInputInt"]["input_order"]["optional"] == ["min", "max", "step", "description"]
    assert info["ApiInputImage"]["input"]["required"]["image"][1]["image_upload"] is True
    assert info["ApiInputVideo"]["input"]["required"]["file"][1]["video_upload"] is True


def parameterized_graph() -> dict[str, Any]:
    """The t2v graph with its text, seed, steps, sampler, width, fps and prefix set by nodes."""
    graph = t2v_graph()

    def param(node_id: str, class_type: str, target: tuple[str, str], **inputs: Any) -> None:
        graph[node_id] = {"class_type": class_type, "inputs": inputs}
        graph[target[0]]["inputs"][target[1]] = [node_id, 0]

    param("100", "ApiInputText", ("6", "text"), name="prompt", value="a red fox")
    param("101", "ApiInputSeed", ("3", "seed"), name="seed", value=1234)
    param("102", "ApiInputInt", ("3", "steps"), name="steps", value=3, min=1, max=50)
    param("103", "ApiInputFloat", ("57", "fps"), name="fps", value=12.0, min=1.0, max=60.0)
    param(
        "104",
        "ApiInputChoice",
        ("3", "sampler_name"),
        name="sampler",
        choices="euler\nuni_pc",
        value="euler",
    )
    param(
        "105",
        "ApiInputChoice",
        ("3", "scheduler"),
        name="scheduler",
        choices="simple",
        value="simple",
    )
    param("106", "ApiInputInt", ("55", "width"), name="width", value=96, step=32)
    param("107", "ApiInputText", ("58", "filename_prefix"), name="prefix", value="api/fox")
    return graph


async def test_values_reach_the_nodes_they_feed(client: httpx.AsyncClient, ws: WsListener) -> None:
    graph = parameterized_graph()
    _, messages, entry = await run(client, ws, graph)
    assert "execution_success" in types_of(messages)
    progress = [m["data"] for m in messages if m["type"] == "progress"]
    assert [(p["value"], p["max"]) for p in progress] == [(1, 3), (2, 3), (3, 3)]
    [saved] = entry["outputs"]["58"]["images"]
    assert (saved["subfolder"], saved["filename"]) == ("api", "fox_00001_.mp4")
    video = await fetch_video(client, entry)
    assert (video["width"], video["height"], video["fps"]) == (96, 64, 12.0)

    # What reached the sampler: shown by the decoder's inputs when it fails.
    await client.post("/_standin/faults/node", json={"class_type": "VAEDecode", "message": "x"})
    graph["101"]["inputs"]["value"] = 99
    _, messages, _ = await run(client, ws, graph)
    [samples] = error_of(messages)["current_inputs"]["samples"]
    for fragment in ("text='a red fox'", "seed=99", "steps=3", "sampler_name='euler'"):
        assert fragment in samples, fragment
    assert "scheduler='simple'" in samples


async def test_text_through_a_linked_choice_and_bool_links(
    client: httpx.AsyncClient, ws: WsListener
) -> None:
    # Text -> Choice (its value linked) -> the text of both encoders; a failing encoder shows
    # what arrived.
    graph = t2v_graph()
    graph["111"] = {
        "class_type": "ApiInputChoice",
        "inputs": {"name": "c", "choices": "True\nFalse", "value": ["112", 0]},
    }
    graph["112"] = {"class_type": "ApiInputText", "inputs": {"name": "t", "value": "True"}}
    graph["6"]["inputs"]["text"] = graph["7"]["inputs"]["text"] = ["111", 0]
    await client.post("/_standin/faults/node", json={"class_type": "CLIPTextEncode"})
    _, messages, _ = await run(client, ws, graph)
    assert error_of(messages)["current_inputs"]["text"] == ["True"]
    # No stand-in node takes a BOOLEAN, and a BOOLEAN does not link into an INT.
    graph["110"] = {
        "class_type": "ApiInputBool",
        "inputs": {"name": "flag", "value": True, "description": "a flag"},
    }
    graph["3"]["inputs"]["steps"] = ["110", 0]
    body = (await client.post("/prompt", json={"prompt": graph})).json()
    [error] = body["node_errors"]["3"]["errors"]
    assert error["type"] == "return_type_mismatch"
    assert error["details"] == "steps, received_type(BOOLEAN) mismatch input_type(INT)"


def test_the_stand_in_runs_the_packages_own_functions() -> None:
    run_node = nodes.NODES
    assert run_node["ApiInputBool"](None, name="flag", value=True, description="d").outputs == (
        True,
    )
    assert run_node["ApiInputSeed"](None, name="seed", value=7).outputs == (7,)
    with pytest.raises(TypeError, match="stray"):  # a stray input fails, as in ComfyUI
        run_node["ApiInputText"](None, name="t", value="x", stray=1)


async def test_image_and_video_read_the_input_folder(
    client: httpx.AsyncClient, ws: WsListener
) -> None:
    image = (await upload(client, "start.png", png_bytes(80, 40, (220, 20, 20)))).json()["name"]
    graph = t2v_graph(length=9)
    graph["120"] = {"class_type": "ApiInputImage", "inputs": {"name": "image", "image": image}}
    graph["55"]["inputs"]["start_image"] = ["120", 0]
    _, messages, entry = await run(client, ws, graph)
    assert "execution_success" in types_of(messages)
    first = (await fetch_video(client, entry))["pixels"][0].reshape(-1, 3).mean(axis=0)
    assert first[0] > 180 and first[1] < 60  # red, as uploaded
    # Cached while the file is unchanged, re-run when its content changes (as LoadImage).
    _, messages, _ = await run(client, ws, graph)
    assert "120" in messages[3]["data"]["nodes"]
    await upload(client, image, png_bytes(80, 40, (0, 0, 200)), overwrite="1")
    _, messages, _ = await run(client, ws, graph)
    assert "120" not in messages[3]["data"]["nodes"]

    source = (await upload(client, "source.mp4", mp4_bytes(5, 48, 32))).json()["name"]
    video_graph = {
        "130": {"class_type": "ApiInputVideo", "inputs": {"name": "video", "file": source}},
        "131": {
            "class_type": "SaveVideo",
            "inputs": {
                "video": ["130", 0],
                "filename_prefix": "api/copy",
                "format": "auto",
                "codec": "auto",
            },
        },
    }
    _, messages, entry = await run(client, ws, video_graph)
    video = await fetch_video(client, entry, node="131")
    assert (video["width"], video["height"], video["frames"], video["fps"]) == (48, 32, 5, 12.0)

    missing = copy.deepcopy(video_graph)
    missing["130"]["inputs"]["file"] = "nope.mp4"
    body = (await client.post("/prompt", json={"prompt": missing})).json()
    [error] = body["node_errors"]["130"]["errors"]
    assert error["type"] == "custom_validation_failed"
    assert error["details"] == "file - Invalid video file: nope.mp4"


async def test_a_choice_outside_its_choices_fails(
    client: httpx.AsyncClient, ws: WsListener
) -> None:
    graph = parameterized_graph()
    graph["104"]["inputs"]["value"] = "heun"
    response = await client.post("/prompt", json={"prompt": graph})
    assert response.status_code == 400
    body = response.json()
    assert body["error"]["type"] == "prompt_outputs_failed_validation"
    node = body["node_errors"]["104"]
    assert node["class_type"] == "ApiInputChoice" and node["dependent_outputs"] == ["58"]
    reason = "'heun' is not one of the choices: euler, uni_pc"
    assert [(e["type"], e["details"]) for e in node["errors"]] == [
        ("custom_validation_failed", f"choices - {reason}"),
        ("custom_validation_failed", f"value - {reason}"),
    ]

    # A linked value is only known when the node runs: it fails there.
    graph["104"]["inputs"]["value"] = ["140", 0]
    graph["140"] = {"class_type": "ApiInputText", "inputs": {"name": "s", "value": "heun"}}
    _, messages, entry = await run(client, ws, graph)
    error = error_of(messages)
    assert (error["node_id"], error["node_type"], error["exception_type"]) == (
        "104",
        "ApiInputChoice",
        "ValueError",
    )
    assert error["exception_message"] == f"ApiInputChoice 'sampler': {reason}\n"
    assert entry["status"]["status_str"] == "error"


async def test_bounds_and_link_types(client: httpx.AsyncClient) -> None:
    graph = parameterized_graph()
    graph["102"]["inputs"]["value"] = 80
    body = (await client.post("/prompt", json={"prompt": graph})).json()
    details = [e["details"] for e in body["node_errors"]["102"]["errors"]]
    # One error per input of its VALIDATE_INPUTS, in the prompt's order, as ComfyUI reports.
    reason = "value 80 is bigger than max 50"
    assert details == [f"{n} - {reason}" for n in ("value", "min", "max")]

    # The choice's "*" plugs into combos and text, not into other types.
    graph = parameterized_graph()
    graph["3"]["inputs"]["model"] = ["104", 0]
    body = (await client.post("/prompt", json={"prompt": graph})).json()
    [error] = body["node_errors"]["3"]["errors"]
    assert error["details"] == "model, received_type(*) mismatch input_type(MODEL)"
    graph = parameterized_graph()
    graph["58"]["inputs"]["format"] = ["141", 0]  # a V3 "COMBO"
    graph["141"] = {
        "class_type": "ApiInputChoice",
        "inputs": {"name": "format", "choices": "auto\nmp4", "value": "mp4"},
    }
    assert (await client.post("/prompt", json={"prompt": graph})).status_code == 200


def test_the_package_imports_without_torch_or_comfyui(tmp_path: Any) -> None:
    script = textwrap.dedent(
        """
        import importlib.abc, importlib.util, sys
        BLOCKED = {"torch", "numpy", "PIL", "folder_paths", "nodes", "comfy", "comfy_api"}

        class Block(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in BLOCKED:
                    raise ImportError(f"blocked: {name}")

        sys.meta_path.insert(0, Block())
        init = sys.argv[1]
        spec = importlib.util.spec_from_file_location("api_inputs", init)
        module = importlib.util.module_from_spec(spec)
        sys.modules["api_inputs"] = module
        spec.loader.exec_module(module)
        for cls in module.NODE_CLASS_MAPPINGS.values():
            cls.INPUT_TYPES()
        print(sorted(module.NODE_CLASS_MAPPINGS))
        print(sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED))
        """
    )
    init = REPO / "custom_nodes" / "api_inputs" / "__init__.py"
    done = subprocess.run(
        [sys.executable, "-I", "-c", script, str(init)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={"PATH": os.environ.get("PATH", "")},
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    names, imported = done.stdout.splitlines()
    assert names == str(sorted(CLASSES)) and imported == "[]"


CHROMIUM = Path("/usr/bin/chromium")


@pytest.fixture
def chromium() -> Path:
    from comfyui.standin.frontend import find_web_root

    if not CHROMIUM.exists() or find_web_root() is None:
        pytest.skip("needs Debian's Chromium at /usr/bin/chromium and comfyui-frontend-package")
    return CHROMIUM


@pytest.mark.browser
async def test_the_graph_editor_links_them(
    chromium: Path, standin: Any, client: httpx.AsyncClient, ws: WsListener
) -> None:
    """In the real editor (frontend 1.27.10) the nodes load, the choice's "*" connects to a
    combo widget, and the prompt the editor queues passes validation and runs."""
    from playwright.async_api import async_playwright

    image = (await upload(client, "start.png", png_bytes())).json()["name"]
    graph = parameterized_graph()
    graph["120"] = {"class_type": "ApiInputImage", "inputs": {"name": "image", "image": image}}
    graph["55"]["inputs"]["start_image"] = ["120", 0]
    scheduler = graph.pop("105")  # connected in the page below, as an author would
    graph["3"]["inputs"]["scheduler"] = "simple"
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=str(chromium),
            headless=True,
            args=["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run"],
        )
        try:
            page = await (await browser.new_context()).new_page()
            page.set_default_timeout(30_000)
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            await page.goto(standin.url + "/")
            await page.wait_for_function(
                "() => window.app?.graph && LiteGraph.registered_node_types.ApiInputChoice"
            )
            await page.wait_for_load_state("networkidle")
            await page.evaluate("g => window.app.loadApiJson(g, 'api inputs')", graph)
            found = await page.evaluate(
                """(inputs) => {
                    const types = LiteGraph.registered_node_types;
                    const names = Object.keys(types).filter(n => n.startsWith('ApiInput'));
                    const sampler = window.app.graph.findNodesByType('KSampler')[0];
                    const slot = sampler.inputs.findIndex(i => i.name === 'scheduler');
                    const choice = LiteGraph.createNode('ApiInputChoice');
                    window.app.graph.add(choice);
                    for (const [name, value] of Object.entries(inputs)) {
                        choice.widgets.find(w => w.name === name).value = value;
                    }
                    const image = window.app.graph.findNodesByType('ApiInputImage')[0];
                    return {
                        names,
                        slotType: sampler.inputs[slot].type,
                        output: choice.outputs[0].type,
                        linked: choice.connect(0, sampler, slot) !== null,
                        upload: image.widgets.some(w => w.name === 'upload'),
                    };
                }""",
                scheduler["inputs"],
            )
            queued = await page.evaluate("async () => (await window.app.graphToPrompt()).output")
        finally:
            await browser.close()
    assert found == {
        "names": CLASSES,
        "slotType": "COMBO",
        "output": "*",
        "linked": True,
        "upload": True,
    }
    assert errors == []
    [sampler] = [n for n in queued.values() if n["class_type"] == "KSampler"]
    sources = {
        name: queued[value[0]]["class_type"]
        for name, value in sampler["inputs"].items()
        if isinstance(value, list)
    }
    assert {k: sources[k] for k in ("seed", "steps", "sampler_name", "scheduler")} == {
        "seed": "ApiInputSeed",
        "steps": "ApiInputInt",
        "sampler_name": "ApiInputChoice",
        "scheduler": "ApiInputChoice",
    }
    prompt_id = await submit(client, queued)
    messages = await ws.run_to_end(prompt_id)
    assert "execution_success" in types_of(messages)
