"""The real ComfyUI graph editor (comfyui-frontend-package 1.27.10) served by the stand-in.

The browser tests drive Debian's headless Chromium through Playwright on the test's own event
loop, against a stand-in started in-process. They skip, saying why, without /usr/bin/chromium
or without the package (the ``standin`` extra).

From a test, the loaded graph is read through the page:

- UI format (what the editor saves): ``window.app.graph.serialize()``
- API format (what it queues): ``(await window.app.graphToPrompt()).output``
"""

from __future__ import annotations

import asyncio
import copy
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from comfyui.standin import StandinHandle, start_standin
from comfyui.standin import server as standin_server
from comfyui.standin.frontend import find_web_root

from .conftest import REPO

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run"]
T2V = REPO / "workflows" / "fastwan_t2v.json"
WAIT_S = 30.0
# What the editor asks the server for while it loads (each under /api).
LOAD_CALLS = {
    "/api/userdata/user.css",
    "/api/system_stats",
    "/api/users",
    "/api/i18n",
    "/api/settings",
    "/api/userdata?dir=workflows&recurse=true&split=false&full_info=true",
    "/api/userdata?dir=subgraphs%2F&recurse=true&split=false&full_info=true",
    "/api/extensions",
    "/api/object_info",
    "/api/queue",
    "/api/history?max_items=64",
    "/api/userdata/comfy.templates.json",
    "/api/workflow_templates",
    "/api/experiment/models",
}
needs_editor = pytest.mark.skipif(
    find_web_root() is None,
    reason='comfyui-frontend-package is not installed (pip install -e ".[standin]")',
)


# --- plain HTTP ------------------------------------------------------------------------------


@needs_editor
async def test_index_and_assets(client: httpx.AsyncClient) -> None:
    index = await client.get("/")
    assert index.status_code == 200 and index.headers["content-type"].startswith("text/html")
    assert index.headers["cache-control"] == "no-cache"
    assert '<div id="vue-app">' in index.text
    web_root = find_web_root()
    assert web_root is not None
    script = next((web_root / "assets").glob("index-*.js")).name
    asset = await client.get(f"/assets/{script}")
    assert asset.status_code == 200 and asset.headers["cache-control"] == "no-cache"
    assert asset.headers["content-type"].startswith(("application/javascript", "text/javascript"))
    assert (await client.get("/favicon.ico")).status_code == 200
    assert (await client.get("/assets/nope.js")).status_code == 404
    # Routes win over files, and the files have no /api alias (as in ComfyUI).
    assert (await client.get("/api/index.html")).status_code == 404
    assert (await client.get("/object_info/KSampler")).json()["KSampler"]["name"] == "KSampler"


async def test_index_without_the_package_says_how_to_install_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(standin_server, "find_web_root", lambda: None)
    async with await start_standin(data_dir=tmp_path) as standin:
        async with httpx.AsyncClient(base_url=standin.url) as http:
            index = await http.get("/")
            assert index.status_code == 200 and 'pip install -e ".[standin]"' in index.text
            assert (await http.get("/assets/whatever.js")).status_code == 404
            assert (await http.get("/settings")).status_code == 200


async def test_support_routes(client: httpx.AsyncClient, standin: StandinHandle) -> None:
    assert (await client.get("/i18n")).json() == {}
    assert (await client.get("/workflow_templates")).json() == {}
    core = await client.get("/templates/index.json")
    assert core.json() == [] and core.headers["content-type"].startswith("application/json")
    folders = (await client.get("/api/experiment/models")).json()
    names = [f["name"] for f in folders]
    assert "configs" not in names and "custom_nodes" not in names
    assert {"name": "loras", "folders": [str(standin.data_dir / "models" / "loras")]} in folders
    [lora] = (await client.get("/experiment/models/loras")).json()
    assert set(lora) == {"name", "pathIndex", "modified", "created", "size"}
    assert lora["name"] == "Wan2_2_5B_FastWanFullAttn_lora_rank_128_bf16.safetensors"
    assert lora["pathIndex"] == 0 and isinstance(lora["modified"], float)
    [unet] = (await client.get("/experiment/models/diffusion_models")).json()
    assert unet["pathIndex"] == 0  # models/diffusion_models, the first of its two folders
    assert (await client.get("/experiment/models/nope")).status_code == 404
    raw = (await client.get("/internal/logs/raw")).json()
    assert raw == {"entries": [], "size": {"cols": None, "rows": None}}
    assert (await client.get("/api/internal/logs")).status_code == 404  # no /api alias
    argv = (await client.get("/system_stats")).json()["system"]["argv"]
    assert "--disable-api-nodes" in argv  # keeps the editor from asking api.comfy.org


async def test_object_info_has_the_loaders_the_editor_needs(client: httpx.AsyncClient) -> None:
    """Frontend 1.27.10 cannot build a combo widget unless these classes are defined."""
    info = (await client.get("/object_info")).json()
    needed = {
        "CheckpointLoaderSimple",
        "ImageOnlyCheckpointLoader",
        "LoraLoader",
        "LoraLoaderModelOnly",
        "VAELoader",
        "ControlNetLoader",
        "UNETLoader",
        "UpscaleModelLoader",
        "StyleModelLoader",
        "GLIGENLoader",
    }
    assert needed <= set(info)
    lora = info["LoraLoader"]["input"]["required"]["lora_name"][0]
    assert lora == ["Wan2_2_5B_FastWanFullAttn_lora_rank_128_bf16.safetensors"]
    upscale = (await client.get("/object_info/UpscaleModelLoader")).json()
    assert upscale["UpscaleModelLoader"]["input"]["required"]["model_name"][1]["options"] == []
    # Listed for the editor, not run: a prompt using one fails as for any unknown class.
    graph = {"1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "x"}}}
    rejected = await client.post("/prompt", json={"prompt": graph})
    assert rejected.status_code == 400


# --- the editor in Chromium -----------------------------------------------------------------


@dataclass
class Editor:
    """One loaded editor page and everything it reported while loading and since."""

    page: Any
    origin: str
    console_errors: list[str] = field(default_factory=list)
    page_errors: list[str] = field(default_factory=list)
    bad_responses: list[str] = field(default_factory=list)
    foreign_requests: list[str] = field(default_factory=list)
    api_calls: list[str] = field(default_factory=list)

    def watch(self) -> None:
        self.page.on("console", self._on_console)
        self.page.on("pageerror", lambda exc: self.page_errors.append(str(exc)))
        self.page.on("request", self._on_request)
        self.page.on("response", self._on_response)

    def _on_console(self, message: Any) -> None:
        if message.type == "error":
            self.console_errors.append(message.text)

    def _on_request(self, request: Any) -> None:
        url: str = request.url
        if url.startswith(self.origin + "/api/"):
            self.api_calls.append(f"{request.method} {url.removeprefix(self.origin)}")
        elif not url.startswith((self.origin + "/", "data:", "blob:")):
            self.foreign_requests.append(url)

    def _on_response(self, response: Any) -> None:
        if response.status >= 400:
            self.bad_responses.append(f"{response.status} {response.request.method} {response.url}")

    def assert_clean(self) -> None:
        assert self.page_errors == []
        assert self.console_errors == []
        assert self.bad_responses == []
        assert self.foreign_requests == []

    async def close_template_dialog(self) -> None:
        """The first load opens "Get Started with a Template" (no template is installed)."""
        dialog = self.page.get_by_role("dialog", name="Get Started with a Template")
        await dialog.wait_for()
        await dialog.get_by_role("button", name="Close").click()
        await dialog.wait_for(state="detached")

    async def load_api_workflow(self, graph: dict[str, Any], name: str) -> None:
        await self.page.evaluate("([g, n]) => window.app.loadApiJson(g, n)", [graph, name])

    async def api_format(self) -> dict[str, Any]:
        output: dict[str, Any] = await self.page.evaluate(
            "async () => (await window.app.graphToPrompt()).output"
        )
        return output

    async def ui_format(self) -> dict[str, Any]:
        workflow: dict[str, Any] = await self.page.evaluate("() => window.app.graph.serialize()")
        return workflow


@pytest.fixture
def chromium() -> Path:
    if not CHROMIUM.exists():
        pytest.skip(f"Debian Chromium is not installed at {CHROMIUM} (apt-get install chromium)")
    if find_web_root() is None:
        pytest.skip('comfyui-frontend-package is not installed (pip install -e ".[standin]")')
    return CHROMIUM


@pytest.fixture
async def browser(chromium: Path) -> AsyncIterator[Any]:
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(
            executable_path=str(chromium), headless=True, args=CHROMIUM_ARGS
        )
        try:
            yield launched
        finally:
            await launched.close()


async def open_editor(browser: Any, standin: StandinHandle) -> Editor:
    """A fresh browser context on the stand-in's ``/``, waited for until the editor is up."""
    context = await browser.new_context(viewport={"width": 1400, "height": 900})
    page = await context.new_page()
    page.set_default_timeout(WAIT_S * 1000)
    editor = Editor(page, standin.url)
    editor.watch()
    await page.goto(standin.url + "/")
    # Set up, node definitions registered, and the websocket's first status message read.
    await page.wait_for_function(
        "() => window.app?.graph && window.app.extensionManager?.workflow?.activeWorkflow"
        " && window.app.api.clientId && LiteGraph.registered_node_types.KSampler"
    )
    await page.wait_for_load_state("networkidle")
    return editor


@pytest.fixture
async def editor(browser: Any, standin: StandinHandle) -> Editor:
    return await open_editor(browser, standin)


@pytest.mark.browser
async def test_editor_loads_cleanly(editor: Editor, standin: StandinHandle) -> None:
    await editor.close_template_dialog()
    editor.assert_clean()
    page = editor.page
    assert await page.evaluate("() => typeof window.app") == "object"
    assert await page.evaluate("() => window.app.api.clientId") in standin.server.hub.connections
    versions = await page.evaluate("() => window.__COMFYUI_FRONTEND_VERSION__")
    assert versions == "1.27.10"
    calls = {call.split(" ", 1)[1] for call in editor.api_calls if call.startswith("GET ")}
    assert LOAD_CALLS <= calls, sorted(LOAD_CALLS - calls)
    # The first load records the editor's version and that the tutorial dialog was shown.
    settings = (standin.data_dir / "user" / "default" / "comfy.settings.json").read_text()
    assert json.loads(settings)["Comfy.InstalledVersion"] == "1.27.10"


@pytest.mark.browser
async def test_api_workflow_round_trip(editor: Editor) -> None:
    """An API-format workflow loaded into the editor comes back from graphToPrompt unchanged."""
    graph = json.loads(T2V.read_text())
    await editor.load_api_workflow(graph, "fastwan_t2v.json")
    output = await editor.api_format()
    assert set(output) == set(graph)
    for node_id, node in graph.items():
        assert output[node_id]["class_type"] == node["class_type"], node_id
        assert output[node_id]["inputs"] == node["inputs"], node_id
        assert output[node_id]["_meta"]["title"] == node["_meta"]["title"], node_id
    ui = await editor.ui_format()
    assert {str(n["id"]): n["type"] for n in ui["nodes"]} == {
        node_id: node["class_type"] for node_id, node in graph.items()
    }
    links = sum(
        1 for node in graph.values() for v in node["inputs"].values() if isinstance(v, list)
    )
    assert len(ui["links"]) == links
    editor.assert_clean()


@pytest.mark.browser
async def test_save_through_the_editor(
    editor: Editor, browser: Any, standin: StandinHandle, client: httpx.AsyncClient
) -> None:
    """The editor's own Save (command, filename prompt) stores the UI format in user/default."""
    await editor.close_template_dialog()
    graph = json.loads(T2V.read_text())
    await editor.load_api_workflow(graph, "fastwan_t2v.json")
    page = editor.page
    # Not awaited in the page: the command ends only once the filename prompt is answered.
    await page.evaluate(
        "() => { window.app.extensionManager.command.execute('Comfy.SaveWorkflow') }"
    )
    prompt = page.get_by_role("dialog", name="Save workflow")
    await prompt.get_by_role("textbox").fill("My FastWAN t2v")
    await prompt.get_by_role("button", name="Confirm").click()
    await page.wait_for_function(
        "() => window.app.extensionManager.workflow.activeWorkflow.path"
        " === 'workflows/My FastWAN t2v.json'"
        " && !window.app.extensionManager.workflow.activeWorkflow.isTemporary"
    )
    saved_path = standin.data_dir / "user" / "default" / "workflows" / "My FastWAN t2v.json"
    saved = json.loads(saved_path.read_text())
    shown = await editor.ui_format()
    assert saved["links"] == shown["links"]
    assert {n["id"]: n["type"] for n in saved["nodes"]} == {
        n["id"]: n["type"] for n in shown["nodes"]
    }
    assert sorted(n["type"] for n in saved["nodes"]) == sorted(
        n["class_type"] for n in graph.values()
    )
    assert (
        "POST /api/userdata/workflows%2FMy%20FastWAN%20t2v.json?overwrite=false&full_info=true"
        in (editor.api_calls)
    )
    listed = await client.get("/userdata", params={"dir": "workflows", "full_info": "true"})
    assert [entry["path"] for entry in listed.json()] == ["My FastWAN t2v.json"]
    editor.assert_clean()

    # Another browser (the tutorial is done: it opens on the editor's default graph, whose
    # classes are all known) finds it in the workflow library and opens it.
    other = await open_editor(browser, standin)
    default_graph = await other.ui_format()
    assert "EmptyLatentImage" in {n["type"] for n in default_graph["nodes"]}
    paths = await other.page.evaluate(
        "() => window.app.extensionManager.workflow.workflows.map(w => w.path)"
    )
    assert "workflows/My FastWAN t2v.json" in paths
    await other.page.evaluate(
        """async () => {
            const store = window.app.extensionManager.workflow;
            const workflow = store.getWorkflowByPath('workflows/My FastWAN t2v.json');
            await workflow.load();
            await window.app.loadGraphData(workflow.activeState, true, true, workflow);
        }"""
    )
    reopened = await other.api_format()
    assert {k: v["class_type"] for k, v in reopened.items()} == {
        k: v["class_type"] for k, v in graph.items()
    }
    other.assert_clean()


@pytest.mark.browser
async def test_editor_queues_a_prompt_the_stand_in_runs(
    editor: Editor, standin: StandinHandle, client: httpx.AsyncClient
) -> None:
    graph = copy.deepcopy(json.loads(T2V.read_text()))
    latent = next(n for n in graph.values() if n["class_type"] == "Wan22ImageToVideoLatent")
    latent["inputs"].update(width=64, height=64, length=5)
    sampler = next(n for n in graph.values() if n["class_type"] == "KSampler")
    sampler["inputs"]["steps"] = 2
    await editor.load_api_workflow(graph, "small.json")
    await editor.page.evaluate("async () => { await window.app.queuePrompt(0) }")

    async def finished() -> dict[str, Any]:
        while True:
            history = (await client.get("/history")).json()
            if history and all(e["status"]["completed"] for e in history.values()):
                return history
            await asyncio.sleep(0.1)

    history = await asyncio.wait_for(finished(), WAIT_S)
    [entry] = history.values()
    assert entry["status"]["status_str"] == "success"
    number, prompt_id, prompt, extra_data, outputs = entry["prompt"]
    assert set(prompt) == set(graph)
    client_id = await editor.page.evaluate("() => window.app.api.clientId")
    assert extra_data["client_id"] == client_id
    assert "workflow" in extra_data["extra_pnginfo"]  # the UI format rides along
    [video] = next(iter(entry["outputs"].values()))["images"]
    assert video["filename"].endswith(".mp4")
    editor.assert_clean()
