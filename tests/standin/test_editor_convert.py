"""Our UI-format converter checked against the graph editor itself, in Chromium.

Each test puts a graph into the real editor (comfyui-frontend-package 1.27.10) served by the
stand-in, reads back what the editor saves (``graph.serialize()``) and what it queues
(``graphToPrompt().output``), and asserts that ``to_api`` turns the first into the second
with the stand-in's ``/object_info``. Where they disagree, the editor is right.

One stand-in and one browser serve the module; each test gets its own browser context.
"""

from __future__ import annotations

import copy
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import pytest_asyncio

from comfyui.standin import StandinHandle, start_standin
from comfyui.standin.frontend import find_web_root
from proxy.workflows.uiformat import to_api

from .conftest import MANIFEST, REPO, png_bytes
from .test_frontend import CHROMIUM, CHROMIUM_ARGS, WAIT_S, Editor, open_editor
from .test_media import mp4_bytes

pytestmark = [pytest.mark.browser, pytest.mark.asyncio(loop_scope="module")]

SHIPPED = ("fastwan_t2v", "fastwan_i2v", "fastwan_v2v")
# Hand-made UI workflows of the converter's unit tests whose classes the stand-in defines.
SAVED_UI = REPO / "tests" / "workflows" / "ui"
LOADABLE_UI = ("fastwan_t2v", "fastwan_v2v", "primitives", "reroutes", "group_node")
WAIT_MS = WAIT_S * 1000
# The editor gives a LoadVideo node this widget once the browser has decoded its file; it
# reaches the prompt as "" and ComfyUI ignores it. As it depends on the browser rather than on
# the graph, to_api leaves it out.
VIDEO_PREVIEW = "video-preview"

# Built through the editor's own API: a bypassed LoRA (passes the model on), a bypassed
# VAEDecode (no IMAGE input to pass on), a muted VAEDecode, a chain of Reroutes and one with
# nothing connected, PrimitiveNodes feeding one and two widgets, widget inputs fed by links
# (through a Reroute, from a muted node, through bypassed nodes), titled nodes and a note.
# Returns the ids of the nodes the test looks at.
BUILD_GRAPH = """() => {
    const graph = window.app.graph;
    graph.clear();
    const add = (type, title) => {
        const node = LiteGraph.createNode(type);
        graph.add(node);
        if (title) node.title = title;
        return node;
    };
    const link = (from, slot, to, input) => {
        const index = to.findInputSlot(input);
        if (index < 0) throw new Error(`${to.type} has no input ${input}`);
        if (!from.connect(slot, to, index)) throw new Error(`${from.type} -> ${to.type}.${input}`);
    };
    const set = (node, name, value) => {
        node.widgets.find((w) => w.name === name).value = value;
    };

    const unet = add("UNETLoader");
    const lora = add("LoraLoaderModelOnly");
    link(unet, 0, lora, "model");
    const shift = add("ModelSamplingSD3");
    link(lora, 0, shift, "model");
    set(shift, "shift", 5);
    const clip = add("CLIPLoader");
    const reroute = add("Reroute");
    link(clip, 0, reroute, "");
    const again = add("Reroute");
    link(reroute, 0, again, "");
    const positive = add("CLIPTextEncode", "Positive $prompt");
    link(again, 0, positive, "clip");
    const negative = add("CLIPTextEncode");
    link(reroute, 0, negative, "clip");
    set(negative, "text", "blurry\\r\\nugly");
    const text = add("PrimitiveNode");
    link(text, 0, positive, "text");
    text.widgets[0].value = "a cat // not this\\nin the rain";
    const vae = add("VAELoader");
    const latent = add("Wan22ImageToVideoLatent");
    link(vae, 0, latent, "vae");
    const size = add("PrimitiveNode", "Size $size");
    link(size, 0, latent, "width");
    link(size, 0, latent, "height");
    size.widgets[0].value = 320;
    const sampler = add("KSampler", "Sampler $seed=seed");
    link(shift, 0, sampler, "model");
    link(positive, 0, sampler, "positive");
    link(negative, 0, sampler, "negative");
    link(latent, 0, sampler, "latent_image");
    const seed = add("PrimitiveNode");
    link(seed, 0, sampler, "seed");
    seed.widgets[0].value = 1234;
    const steps = add("ApiInputInt");
    set(steps, "name", "steps");
    set(steps, "value", 6);
    link(steps, 0, sampler, "steps");
    const choice = add("ApiInputChoice");
    set(choice, "choices", "euler\\nuni_pc");
    link(choice, 0, sampler, "sampler_name");

    const decode = add("VAEDecode");
    link(sampler, 0, decode, "samples");
    link(vae, 0, decode, "vae");
    const video = add("CreateVideo");
    link(decode, 0, video, "images");
    set(video, "fps", 16);
    const nothing = add("Reroute");
    link(nothing, 0, video, "audio");
    const save = add("SaveVideo", "Save $video");
    link(video, 0, save, "video");

    const muted = add("VAEDecode");
    link(sampler, 0, muted, "samples");
    link(vae, 0, muted, "vae");
    const still = add("SaveImage");
    link(muted, 0, still, "images");
    const bypassed = add("VAEDecode");
    link(sampler, 0, bypassed, "samples");
    link(vae, 0, bypassed, "vae");
    const other = add("CreateVideo");
    link(bypassed, 0, other, "images");
    const saveOther = add("SaveVideo");
    link(other, 0, saveOther, "video");

    // Widget inputs fed through a Reroute, by a muted node and by bypassed ones.
    const sampler2 = add("KSampler");
    link(shift, 0, sampler2, "model");
    link(positive, 0, sampler2, "positive");
    link(negative, 0, sampler2, "negative");
    link(latent, 0, sampler2, "latent_image");
    set(sampler2, "cfg", 2.5);
    set(sampler2, "denoise", 0.75);
    set(sampler2, "steps", 9);
    const cfg = add("ApiInputFloat");
    set(cfg, "value", 3.5);
    const cfgReroute = add("Reroute");
    link(cfg, 0, cfgReroute, "");
    link(cfgReroute, 0, sampler2, "cfg");
    const denoise = add("ApiInputFloat");
    set(denoise, "value", 0.5);
    link(denoise, 0, sampler2, "denoise");
    const skippedSteps = add("ApiInputInt");
    set(skippedSteps, "value", 12);
    link(skippedSteps, 0, sampler2, "steps");
    const skippedChoice = add("ApiInputChoice");
    link(skippedChoice, 0, sampler2, "sampler_name");
    const seedSource = add("ApiInputSeed");
    set(seedSource, "value", 77);
    const skippedSeed = add("ApiInputInt");
    link(seedSource, 0, skippedSeed, "value");
    link(skippedSeed, 0, sampler2, "seed");

    add("Note").widgets[0].value = "not in the prompt";
    lora.mode = 4;
    bypassed.mode = 4;
    muted.mode = 2;
    denoise.mode = 2;
    skippedSteps.mode = 4;
    skippedChoice.mode = 4;
    skippedSeed.mode = 4;
    const named = {
        unet, clip, positive, negative, latent, sampler, steps, choice, video, still, other,
        sampler2, cfg, seedSource,
    };
    return Object.fromEntries(Object.entries(named).map(([k, node]) => [k, String(node.id)]));
}"""


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def standin(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[StandinHandle]:
    """One stand-in for the module (overrides the per-test one of conftest), with the input
    files the shipped workflows name, so that the editor's previews find them."""
    data_dir = tmp_path_factory.mktemp("editor-convert") / "data"
    handle = await start_standin(data_dir=data_dir, with_models=MANIFEST)
    (data_dir / "input" / "example.png").write_bytes(png_bytes(64, 64))
    (data_dir / "input" / "input.mp4").write_bytes(mp4_bytes(5, 64, 64))
    try:
        yield handle
    finally:
        await handle.close()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def object_info(standin: StandinHandle) -> dict[str, Any]:
    async with httpx.AsyncClient(base_url=standin.url, timeout=WAIT_S) as http:
        response = await http.get("/object_info")
    response.raise_for_status()
    info: dict[str, Any] = response.json()
    return info


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def browser() -> AsyncIterator[Any]:
    if not CHROMIUM.exists():
        pytest.skip(f"Debian Chromium is not installed at {CHROMIUM} (apt-get install chromium)")
    if find_web_root() is None:
        pytest.skip('comfyui-frontend-package is not installed (pip install -e ".[standin]")')
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
        )
        try:
            yield launched
        finally:
            await launched.close()


@pytest_asyncio.fixture(loop_scope="module")
async def editor(browser: Any, standin: StandinHandle) -> AsyncIterator[Editor]:
    """A fresh page (its own browser context) with the editor up."""
    opened = await open_editor(browser, standin)
    try:
        yield opened
    finally:
        await opened.page.context.close()


async def load_api_json(editor: Editor, graph: dict[str, Any], name: str) -> None:
    # The call's promise is not awaited in the page: wait for the graph it builds instead.
    await editor.page.evaluate("([g, n]) => { window.app.loadApiJson(g, n) }", [graph, name])
    await wait_for_graph(editor, name, len(graph))


async def load_ui_json(editor: Editor, workflow: dict[str, Any], name: str) -> None:
    await editor.page.evaluate(
        "([w, n]) => { window.app.loadGraphData(w, true, true, n) }", [workflow, name]
    )
    await wait_for_graph(editor, name, len(workflow["nodes"]))


async def wait_for_graph(editor: Editor, name: str, count: int) -> None:
    """Until the editor shows `count` nodes as workflow `name`, its video previews loaded."""
    await editor.page.wait_for_function(
        """([name, count, preview]) => {
            const graph = window.app.graph;
            return graph.nodes.length === count
                && window.app.extensionManager.workflow.activeWorkflow?.path === "workflows/" + name
                && graph.nodes.filter((n) => n.type === "LoadVideo")
                    .every((n) => n.widgets?.some((w) => w.name === preview));
        }""",
        arg=[name, count, VIDEO_PREVIEW],
        timeout=WAIT_MS,
    )


async def saved_and_queued(editor: Editor) -> tuple[dict[str, Any], dict[str, Any]]:
    """What the editor saves, then what it queues, for the graph it shows."""
    return await editor.ui_format(), await editor.api_format()


def without_previews(output: dict[str, Any]) -> dict[str, Any]:
    """The editor's prompt without its video previews' `""`, which `to_api` leaves out."""
    stripped = copy.deepcopy(output)
    for node in stripped.values():
        if node["class_type"] == "LoadVideo":
            assert node["inputs"].pop(VIDEO_PREVIEW) == ""
    return stripped


def assert_converts_as_the_editor(
    ui: dict[str, Any], output: dict[str, Any], object_info: dict[str, Any]
) -> None:
    converted = to_api(ui, object_info)
    expected = without_previews(output)
    assert converted == expected
    assert list(converted) == list(expected)  # the key order of a JavaScript object too


@pytest.mark.parametrize("name", SHIPPED)
async def test_shipped_workflow(editor: Editor, object_info: dict[str, Any], name: str) -> None:
    """An API-format workflow loaded into the editor: its saved graph converts to its prompt."""
    shipped = json.loads((REPO / "workflows" / f"{name}.json").read_text())
    await load_api_json(editor, shipped, f"{name}.json")
    ui, output = await saved_and_queued(editor)
    assert_converts_as_the_editor(ui, output, object_info)
    # The editor queues the shipped graph back: same nodes, classes, `$` titles and inputs.
    assert {k: (v["class_type"], v["_meta"]["title"]) for k, v in output.items()} == {
        k: (v["class_type"], v["_meta"]["title"]) for k, v in shipped.items()
    }
    assert without_previews(output) == shipped
    editor.assert_clean()


async def test_primitives_reroutes_muted_and_bypassed_nodes(
    editor: Editor, object_info: dict[str, Any]
) -> None:
    """A graph built with the editor's own API, with every kind of node it leaves out."""
    ids = await editor.page.evaluate(BUILD_GRAPH)
    ui, output = await saved_and_queued(editor)
    assert {n["mode"] for n in ui["nodes"]} == {0, 2, 4}
    assert {"PrimitiveNode", "Reroute", "Note"} <= {n["type"] for n in ui["nodes"]}
    assert_converts_as_the_editor(ui, output, object_info)
    # The editor's prompt is the one the graph was built for.
    classes = {v["class_type"] for v in output.values()}
    assert not classes & {"PrimitiveNode", "Reroute", "Note", "LoraLoaderModelOnly"}
    sampler = output[ids["sampler"]]["inputs"]
    assert sampler["model"][0] not in ids.values()  # the ModelSamplingSD3 node
    assert output[sampler["model"][0]]["inputs"]["model"] == [ids["unet"], 0]  # LoRA bypassed
    assert sampler["seed"] == 1234 and sampler["steps"] == [ids["steps"], 0]
    assert sampler["sampler_name"] == [ids["choice"], 0]
    assert output[ids["positive"]]["inputs"] == {
        "text": "a cat \nin the rain",
        "clip": [ids["clip"], 0],
    }
    assert output[ids["positive"]]["_meta"]["title"] == "Positive $prompt"
    assert output[ids["negative"]]["inputs"] == {"text": "blurry\nugly", "clip": [ids["clip"], 0]}
    latent = output[ids["latent"]]["inputs"]
    assert latent["width"] == latent["height"] == 320
    assert "audio" not in output[ids["video"]]["inputs"]  # from a Reroute fed by nothing
    assert "images" not in output[ids["still"]]["inputs"]  # from the muted VAEDecode
    assert "images" not in output[ids["other"]]["inputs"]  # the bypassed one has no IMAGE input
    second = output[ids["sampler2"]]["inputs"]
    assert second["cfg"] == [ids["cfg"], 0]  # through a Reroute
    assert "denoise" not in second  # its link from a muted node drops the widget's value too
    assert second["steps"] == 9  # a bypassed node with nothing linked: the widget's value
    assert second["sampler_name"] == "euler"  # nor one with no input of its type
    assert second["seed"] == [ids["seedSource"], 0]  # passed through a bypassed node
    editor.assert_clean()


async def test_nodes_converted_to_a_subgraph(editor: Editor, object_info: dict[str, Any]) -> None:
    """The shipped t2v graph with its sampler and prompts made a subgraph in the editor, the
    sampler inside it bypassed: the latent passes through the subgraph's boundary."""
    shipped = json.loads((REPO / "workflows" / "fastwan_t2v.json").read_text())
    await load_api_json(editor, shipped, "fastwan_t2v.json")
    instance = await editor.page.evaluate(
        """() => {
            const graph = window.app.graph;
            const inner = ["3", "6", "7"].map((id) => graph.getNodeById(id));
            const { subgraph, node } = graph.convertToSubgraph(new Set(inner));
            subgraph.getNodeById(3).mode = 4;
            return String(node.id);
        }"""
    )
    ui, output = await saved_and_queued(editor)
    assert [s["name"] for s in ui["definitions"]["subgraphs"]] == ["New Subgraph"]
    assert_converts_as_the_editor(ui, output, object_info)
    assert [k for k in output if ":" in k] == [f"{instance}:6", f"{instance}:7"]
    assert output["8"]["inputs"]["samples"] == ["55", 0]
    editor.assert_clean()


async def test_saved_ui_workflows(editor: Editor, object_info: dict[str, Any]) -> None:
    """The hand-made UI workflows of the unit tests, opened in turn as the editor opens files."""
    for name in LOADABLE_UI:
        workflow = json.loads((SAVED_UI / f"{name}.json").read_text())
        await load_ui_json(editor, workflow, f"{name}.json")
        ui, output = await saved_and_queued(editor)
        assert to_api(workflow, object_info) == without_previews(output), name
        assert_converts_as_the_editor(ui, output, object_info)
    editor.assert_clean()
