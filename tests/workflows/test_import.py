"""Workflows pulled from the connected ComfyUI's saved workflows (issue 16): the admin import
route, and the followed list (COMFY_WORKFLOWS). The stand-in keeps saved workflows as ComfyUI
does (its user data API); the tests save into it as the graph editor would."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx

from proxy.settings import Settings
from proxy.workflows import WorkflowRegistry
from tests.support import ProxyServer, StandinProcess, proxy_server

WORKFLOWS = Path(__file__).resolve().parents[2] / "workflows"
UI = Path(__file__).resolve().parent / "ui"
ADMIN = {"X-API-Key": "boss"}
USER = {"X-API-Key": "user"}
WAIT_S = 20.0


def settings_for(standin: StandinProcess, folder: Path, tmp_path: Path, **kw: Any) -> Settings:
    return Settings(
        data_dir=tmp_path / "data",
        comfyui_urls=[standin.url],
        workflows_dir=folder,
        api_keys=["user:user"],
        admin_api_keys=["boss:boss"],
        **kw,
    )


async def save_in_comfy(standin: StandinProcess, path: str, data: Any) -> None:
    """As the editor's Save does: POST /userdata/workflows%2F<path>."""
    async with httpx.AsyncClient(timeout=10) as comfy:
        saved = await comfy.post(
            f"{standin.url}/userdata/{quote('workflows/' + path, safe='')}",
            params={"overwrite": "true"},
            content=json.dumps(data).encode(),
        )
        assert saved.status_code == 200, saved.text


def registry_of(server: ProxyServer) -> WorkflowRegistry:
    return server.app.state.services.registry  # type: ignore[attr-defined,no-any-return]


def ui_t2v(steps: int) -> dict[str, Any]:
    ui: dict[str, Any] = json.loads((UI / "fastwan_t2v.json").read_text())
    sampler = next(n for n in ui["nodes"] if n["type"] == "KSampler")
    sampler["widgets_values"][2] = steps  # seed, control, steps, cfg, ...
    return ui


async def test_import_a_saved_workflow(
    standin: StandinProcess, folder: Path, tmp_path: Path
) -> None:
    await save_in_comfy(standin, "Night City.json", ui_t2v(6))
    await save_in_comfy(standin, "plain.json", {"1": {"class_type": "KSampler", "inputs": {}}})
    async with proxy_server(settings_for(standin, folder, tmp_path)) as server:
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
            body = {"path": "Night City.json"}
            refused = await client.post("/api/workflows/import", json=body, headers=USER)
            assert refused.status_code == 403

            made = await client.post("/api/workflows/import", json=body, headers=ADMIN)
            assert made.status_code == 201, made.text
            answer = made.json()
            assert answer["name"] == "night_city" and answer["source"] == "Night City.json"
            steps = next(p for p in answer["parameters"] if p["name"] == "steps")
            assert steps["default"] == 6
            assert "nodes" in json.loads((folder / "night_city.json").read_text())
            assert registry_of(server).find("night_city") is not None  # served at once

            again = await client.post("/api/workflows/import", json=body, headers=ADMIN)
            assert again.status_code == 409 and "overwrite" in again.text
            await save_in_comfy(standin, "Night City.json", ui_t2v(7))
            replaced = await client.post(
                "/api/workflows/import", json={**body, "overwrite": True}, headers=ADMIN
            )
            assert replaced.status_code == 201, replaced.text
            served = registry_of(server).get("night_city").param("steps")
            assert served is not None and served.default == 7

            named = await client.post(
                "/api/workflows/import",
                json={"path": "Night City.json", "name": "Bad Name"},
                headers=ADMIN,
            )
            assert named.status_code == 422 and "name" in named.text

            # Nothing half-written: what cannot be served is refused and never lands.
            unmarked = await client.post(
                "/api/workflows/import", json={"path": "plain.json"}, headers=ADMIN
            )
            assert unmarked.status_code == 422 and "marks no parameters" in unmarked.text
            assert not (folder / "plain.json").exists()
            missing = await client.post(
                "/api/workflows/import", json={"path": "nope.json"}, headers=ADMIN
            )
            assert missing.status_code == 404 and "nope.json" in missing.text
            escape = await client.post(
                "/api/workflows/import", json={"path": "../settings.json"}, headers=ADMIN
            )
            assert escape.status_code == 422 and "path" in escape.text
            assert str(tmp_path) not in missing.text + escape.text + unmarked.text


async def test_import_says_when_comfyui_is_down(folder: Path, tmp_path: Path) -> None:
    from tests.support import closed_port_url

    settings = Settings(
        data_dir=tmp_path / "data",
        comfyui_urls=[closed_port_url()],
        workflows_dir=folder,
        admin_api_keys=["boss:boss"],
    )
    async with proxy_server(settings) as server:
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
            answer = await client.post(
                "/api/workflows/import", json={"path": "x.json"}, headers=ADMIN
            )
    assert answer.status_code in (502, 503), answer.text
    assert "cannot be reached" in answer.text


async def test_followed_saved_workflows_are_imported_when_saved(
    standin: StandinProcess, folder: Path, tmp_path: Path
) -> None:
    settings = settings_for(
        standin, folder, tmp_path, comfy_workflows=["night", "broken"], comfy_workflows_poll_s=0.1
    )
    await save_in_comfy(standin, "other.json", ui_t2v(9))  # not followed
    async with proxy_server(settings) as server:
        registry = registry_of(server)

        async def until(check: Any) -> None:
            async with asyncio.timeout(WAIT_S):
                version = registry.version
                while not check():
                    version = await registry.wait_changed(version)

        def steps() -> Any:
            flow = registry.find("night")
            param = flow.param("steps") if flow is not None else None
            return param.default if param is not None else None

        await save_in_comfy(standin, "night.json", ui_t2v(5))
        await until(lambda: steps() == 5)
        await save_in_comfy(standin, "night.json", ui_t2v(6))
        await until(lambda: steps() == 6)
        # A followed workflow that cannot be served: the problem is shown, nothing written.
        ui = ui_t2v(4)
        next(n for n in ui["nodes"] if n["type"] == "KSampler")["type"] = "NoSuchSampler"
        await save_in_comfy(standin, "broken.json", ui)
        await until(lambda: bool(registry.problems("broken")))
        assert "NoSuchSampler" in registry.problems("broken")[0]
        assert not (folder / "broken.json").exists()
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
            listed = (await client.get("/api/workflows", headers=USER)).json()["workflows"]
        by_name = {w["id"] if "id" in w else w["name"]: w for w in listed}
        assert "NoSuchSampler" in json.dumps(by_name["broken"])
        assert registry.find("other") is None
