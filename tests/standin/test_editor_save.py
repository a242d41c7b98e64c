"""A workflow author's round trip (issue 16): open a shipped workflow in the real graph editor
on the stand-in, change a widget, save it with the editor's own Save, and the proxy, following
that saved workflow (COMFY_WORKFLOWS), serves the change within seconds."""

from __future__ import annotations

import asyncio
import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from comfyui.standin import StandinHandle
from proxy.settings import Settings
from proxy.workflows import WorkflowRegistry
from tests.support import ProxyServer, follow_job, proxy_server

from .test_frontend import T2V, WAIT_S, Editor, browser, chromium, open_editor

__all__ = ["browser", "chromium"]  # the fixtures this module uses, from test_frontend

SMALL = {"width": 64, "height": 64, "length": 9, "fps": 8}
SAVED_AS = "My FastWAN"  # the editor saves workflows/My FastWAN.json; served as my_fastwan


def registry_of(server: ProxyServer) -> WorkflowRegistry:
    return server.app.state.services.registry  # type: ignore[attr-defined,no-any-return]


async def served(registry: WorkflowRegistry, until: Callable[[], bool]) -> None:
    async with asyncio.timeout(WAIT_S):
        version = registry.version
        while not until():
            version = await registry.wait_changed(version)


def steps_default(registry: WorkflowRegistry) -> Any:
    flow = registry.find("my_fastwan")
    param = flow.param("steps") if flow is not None else None
    return param.default if param is not None else None


async def set_steps(editor: Editor, steps: int) -> None:
    await editor.page.evaluate(
        """(steps) => {
            const sampler = window.app.graph.nodes.find((n) => n.type === 'KSampler');
            sampler.widgets.find((w) => w.name === 'steps').value = steps;
            window.app.graph.setDirtyCanvas(true, true);
            // As after a change by hand: the editor takes note of its state (what Save saves).
            window.app.extensionManager.workflow.activeWorkflow.changeTracker.checkState();
        }""",
        steps,
    )


async def save(editor: Editor, *, name: str | None) -> None:
    """The editor's Save command; `name` answers its filename prompt (first save only)."""
    page = editor.page
    # Not awaited in the page: the command ends only once the filename prompt is answered.
    await page.evaluate(
        "() => { window.app.extensionManager.command.execute('Comfy.SaveWorkflow') }"
    )
    if name is not None:
        prompt = page.get_by_role("dialog", name="Save workflow")
        await prompt.get_by_role("textbox").fill(name)
        await prompt.get_by_role("button", name="Confirm").click()
    await page.wait_for_function(
        "(path) => { const w = window.app.extensionManager.workflow.activeWorkflow;"
        " return w.path === path && !w.isTemporary && !w.isModified }",
        arg=f"workflows/{SAVED_AS}.json",
    )


@pytest.mark.browser
async def test_a_change_saved_in_the_editor_is_served(
    browser: Any, standin: StandinHandle, tmp_path: Path
) -> None:
    folder = tmp_path / "workflows"
    shutil.copytree(T2V.parent, folder)  # the shipped ones (the seed surfaces need them)
    settings = Settings(
        data_dir=tmp_path / "proxy",
        comfyui_urls=[standin.url],
        workflows_dir=folder,
        comfy_workflows=[SAVED_AS],
        comfy_workflows_poll_s=0.1,
    )
    async with proxy_server(settings) as server:
        registry = registry_of(server)
        assert registry.find("my_fastwan") is None
        editor = await open_editor(browser, standin)
        await editor.close_template_dialog()
        await editor.load_api_workflow(json.loads(T2V.read_text()), "fastwan_t2v.json")
        await set_steps(editor, 6)
        await save(editor, name=SAVED_AS)
        await served(registry, lambda: steps_default(registry) == 6)
        # Imported as the editor saved it (its UI format), into the proxy's folder.
        assert "nodes" in json.loads((folder / "my_fastwan.json").read_text())

        async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
            listed = {m["id"]: m for m in (await client.get("/api/models")).json()["models"]}
            assert "my_fastwan" in listed
            made = await client.post(
                "/api/jobs",
                json={"model_id": "my_fastwan", "prompt": "from the editor", "params": SMALL},
            )
            assert made.status_code == 201, made.text
            assert made.json()["params"]["steps"] == 6  # the editor's value, as the default
            done, _ = await follow_job(client, made.json()["id"], {"completed", "failed"}, 60)
            assert done["status"] == "completed", done

        # Saved again (no prompt now): followed again.
        await set_steps(editor, 7)
        await save(editor, name=None)
        await served(registry, lambda: steps_default(registry) == 7)
        editor.assert_clean()
