"""Hot reload (issue 16): files added, changed, broken, fixed and removed in WORKFLOWS_DIR
take effect while the proxy runs; a broken edit keeps the last good version serving; a job
already running keeps its graph; node schemas come from the connected ComfyUI."""

from __future__ import annotations

import asyncio
import json
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from proxy.settings import Settings
from proxy.workflows import WorkflowRegistry, load_registry
from tests.support import ProxyServer, StandinProcess, follow_job, proxy_server, standin_process

WORKFLOWS = Path(__file__).resolve().parents[2] / "workflows"
UI = Path(__file__).resolve().parent / "ui"  # the editor's saves of the shipped workflows
SMALL = {"width": 64, "height": 64, "length": 9, "steps": 4, "fps": 8}
WAIT_S = 20.0


def t2v_graph() -> dict[str, Any]:
    graph: dict[str, Any] = json.loads((WORKFLOWS / "fastwan_t2v.json").read_text())
    return graph


def write(path: Path, data: Any) -> None:
    """As an editor saves: the whole file at once."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data) if not isinstance(data, str) else data)
    tmp.replace(path)


# -- the registry's replace: last good kept, removed dropped ---------------------------------


def test_replace_keeps_the_last_good_version_of_a_broken_template(tmp_path: Path) -> None:
    shutil.copy(WORKFLOWS / "fastwan_t2v.json", tmp_path / "mine.json")
    registry = load_registry(tmp_path)
    good = registry.get("mine")
    heard: list[int] = []
    registry.listeners.append(lambda: heard.append(registry.version))

    (tmp_path / "mine.json").write_text("{ not json")
    assert registry.replace(load_registry(tmp_path)) == ["mine"]
    assert registry.get("mine") is good  # still serving
    assert "cannot read mine.json" in registry.problems("mine")[0]
    assert heard == [1]

    assert registry.replace(load_registry(tmp_path)) == []  # the same load: nothing changes
    graph = t2v_graph()
    graph["3"]["inputs"]["steps"] = 6
    write(tmp_path / "mine.json", graph)
    assert registry.replace(load_registry(tmp_path)) == ["mine"]
    assert registry.get("mine").param("steps").default == 6  # type: ignore[union-attr]
    assert registry.problems("mine") == []

    (tmp_path / "mine.json").unlink()
    assert registry.replace(load_registry(tmp_path)) == ["mine"]
    assert registry.find("mine") is None and registry.broken == {}
    assert heard == [1, 2, 3]


async def test_waiters_wake_on_a_change() -> None:
    registry = WorkflowRegistry(workflows={}, broken={})
    waiter = asyncio.create_task(registry.wait_changed(0))
    await asyncio.sleep(0)  # let it start waiting (not a synchronisation: it would also pass)
    assert not waiter.done()
    registry.replace(WorkflowRegistry(workflows={}, broken={"x": ["bad"]}))
    async with asyncio.timeout(5):
        assert await waiter == 1


def test_a_ui_format_template_loads_through_the_converter(tmp_path: Path) -> None:
    # What the editor's Save writes (a `nodes` list, widgets by position), with no sidecar.
    ui = json.loads((UI / "fastwan_t2v.json").read_text())
    write(tmp_path / "saved.json", ui)
    shutil.copy(WORKFLOWS / "fastwan_t2v.json", tmp_path / "exported.json")
    registry = load_registry(tmp_path)
    assert registry.broken == {}, registry.broken
    saved, exported = registry.get("saved"), registry.get("exported")
    assert saved.graph == exported.graph
    assert saved.spec.params == exported.spec.params

    sampler = next(n for n in ui["nodes"] if n["type"] == "KSampler")
    sampler["type"] = "NoSuchSampler"
    write(tmp_path / "saved.json", ui)
    (problem,) = load_registry(tmp_path).problems("saved")
    assert "UI format" in problem and "NoSuchSampler" in problem, problem


# -- with the proxy running ------------------------------------------------------------------


@pytest.fixture
async def proxy(
    standin: StandinProcess, folder: Path, tmp_path: Path
) -> AsyncIterator[ProxyServer]:
    settings = Settings(
        data_dir=tmp_path / "data",
        comfyui_urls=[standin.url],
        workflows_dir=folder,
        ws_reconnect_max_s=0.5,
    )
    async with proxy_server(settings) as server:
        yield server


def registry_of(server: ProxyServer) -> WorkflowRegistry:
    return server.app.state.services.registry  # type: ignore[attr-defined,no-any-return]


async def changed(registry: WorkflowRegistry, version: int, until: Any) -> None:
    """Wait (bounded) for reloads until `until()` holds."""
    async with asyncio.timeout(WAIT_S):
        while not until():
            version = await registry.wait_changed(version)


async def models(client: httpx.AsyncClient) -> dict[str, Any]:
    answer = await client.get("/api/models")
    assert answer.status_code == 200
    data: dict[str, Any] = answer.json()
    return data


async def test_add_change_break_fix_remove_while_serving(proxy: ProxyServer, folder: Path) -> None:
    registry = registry_of(proxy)
    async with httpx.AsyncClient(base_url=proxy.url, timeout=30) as client:
        # Added: served without a restart, typed from the graph alone (no sidecar).
        version = registry.version
        shutil.copy(WORKFLOWS / "fastwan_t2v.json", folder / "mine.json")
        await changed(registry, version, lambda: registry.find("mine") is not None)
        listed = {m["id"]: m for m in (await models(client))["models"]}
        steps = next(p for p in listed["mine"]["parameters"] if p["name"] == "steps")
        assert steps["default"] == 8 and steps["max"] == 10000  # KSampler's own range

        made = await client.post(
            "/api/jobs", json={"model_id": "mine", "prompt": "added", "params": SMALL}
        )
        assert made.status_code == 201, made.text
        done, _ = await follow_job(client, made.json()["id"], {"completed", "failed"}, 60)
        assert done["status"] == "completed", done

        # Changed: the new default serves.
        graph = t2v_graph()
        graph["3"]["inputs"]["steps"] = 5
        version = registry.version
        write(folder / "mine.json", graph)
        await changed(registry, version, lambda: registry.get("mine").param("steps").default == 5)  # type: ignore[union-attr]

        # Broken: the last good version still serves, the problem is shown.
        version = registry.version
        write(folder / "mine.json", '{"3": ')
        await changed(registry, version, lambda: bool(registry.problems("mine")))
        assert registry.get("mine").param("steps").default == 5  # type: ignore[union-attr]
        (unavailable,) = [u for u in (await models(client))["unavailable"] if u["id"] == "mine"]
        assert "cannot read mine.json" in unavailable["problems"][0]
        assert str(folder) not in json.dumps(unavailable)  # no server path in an answer
        still = await client.post(
            "/api/jobs", json={"model_id": "mine", "prompt": "still", "params": SMALL}
        )
        assert still.status_code == 201, still.text

        # A stale binding in the sidecar fails loudly, and also keeps the good version.
        version = registry.version
        write(folder / "mine.json", graph)
        await changed(registry, version, lambda: not registry.problems("mine"))
        version = registry.version
        write(folder / "mine.params.json", {"params": {"no_such": {"description": "x"}}})
        await changed(registry, version, lambda: bool(registry.problems("mine")))
        assert "no_such" in " ".join(registry.problems("mine"))
        (folder / "mine.params.json").unlink()
        await changed(registry, registry.version, lambda: not registry.problems("mine"))

        # Removed: no longer served; asking for it says which are.
        version = registry.version
        (folder / "mine.json").unlink()
        await changed(registry, version, lambda: registry.find("mine") is None)
        gone = await client.post("/api/jobs", json={"model_id": "mine", "prompt": "gone"})
        assert gone.status_code == 422 and "fastwan_t2v" in gone.text


async def test_a_running_job_keeps_its_graph_when_its_workflow_goes(
    tmp_path: Path, folder: Path
) -> None:
    with standin_process(tmp_path / "slow", step_seconds=0.3) as slow:
        settings = Settings(
            data_dir=tmp_path / "data2", comfyui_urls=[slow.url], workflows_dir=folder
        )
        shutil.copy(WORKFLOWS / "fastwan_t2v.json", folder / "mine.json")
        async with proxy_server(settings) as server:
            registry = registry_of(server)
            async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
                made = await client.post(
                    "/api/jobs", json={"model_id": "mine", "prompt": "kept", "params": SMALL}
                )
                job_id = made.json()["id"]
                later = await client.post(
                    "/api/jobs",
                    json={"model_id": "mine", "prompt": "later", "params": SMALL, "start": False},
                )
                await follow_job(client, job_id, {"running"}, 30)
                version = registry.version
                (folder / "mine.json").unlink()
                await changed(registry, version, lambda: registry.find("mine") is None)
                done, _ = await follow_job(client, job_id, {"completed", "failed"}, 60)
                assert done["status"] == "completed", done
                # A job that had not started when its workflow went ends, saying why.
                started = await client.post(f"/api/jobs/{later.json()['id']}/start")
                assert started.status_code == 200, started.text
                ended, _ = await follow_job(client, later.json()["id"], {"completed", "failed"})
                assert ended["status"] == "failed"
                assert "no longer served" in ended["error"], ended


async def test_node_schemas_come_from_the_connected_comfyui(
    proxy: ProxyServer, tmp_path: Path, standin: StandinProcess
) -> None:
    # The proxy asks a backend for /object_info when it connects, and keeps the answer.
    kept = tmp_path / "data" / "object_info.json"
    sources = proxy.app.state.services.workflow_sources  # type: ignore[attr-defined]
    backend = proxy.app.state.services.pool.backends[0]  # type: ignore[attr-defined]
    await sources.backend_connected(backend)
    assert "ApiInputInt" in sources.object_info.reported  # our nodes, as the stand-in has them
    stored = json.loads(kept.read_text())
    async with httpx.AsyncClient(timeout=10) as comfy:
        answer = (await comfy.get(f"{standin.url}/object_info")).json()
    assert stored["KSampler"] == answer["KSampler"]
    # Asking again with nothing new changes nothing (no reload).
    version = registry_of(proxy).version
    await sources.backend_connected(backend)
    assert registry_of(proxy).version == version
