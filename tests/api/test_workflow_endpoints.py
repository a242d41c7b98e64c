"""An endpoint per workflow: `GET /api/workflows[/{name}]` and `POST /api/workflows/{name}/jobs`,
their OpenAPI paths, and both following a reload of the workflows folder.

The proxy serves a copy of `workflows/` in tmp_path (plus a template that does not load) in
front of the stand-in ComfyUI. A reload is what the hot reload does: `registry.replace(
load_registry(folder))`, called here in-process.
"""

from __future__ import annotations

import asyncio
import io
import json
import shutil
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image

from proxy.settings import Settings
from proxy.workflows import WorkflowRegistry
from tests.support import REPO_ROOT, ProxyServer, StandinProcess, proxy_server, standin_process

SMALL = {"width": 64, "height": 64, "length": 9, "steps": 4, "fps": 8}
WAIT = {"Prefer": "wait=60"}
BROKEN = "half_saved"  # a template that never loaded


@pytest.fixture(scope="module")
def standin(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StandinProcess]:
    with standin_process(tmp_path_factory.mktemp("comfy"), step_seconds=0) as proc:
        yield proc


@dataclass
class Api:
    client: httpx.AsyncClient
    server: ProxyServer
    folder: Path

    @property
    def registry(self) -> WorkflowRegistry:
        registry: WorkflowRegistry = self.server.app.state.services.registry  # type: ignore[attr-defined]
        return registry

    async def reload(self) -> None:
        """What the hot reload does on a change in the folder: `registry.replace(
        load_registry(folder))`, through the proxy's own reloader, so it cannot interleave
        with the reload a backend's node schemas start (that one's folder read could be older
        than this one's)."""
        sources = self.server.app.state.services.workflow_sources  # type: ignore[attr-defined]
        async with asyncio.timeout(10):
            await sources.reload("test")

    async def spec(self) -> dict[str, Any]:
        answer = await self.client.get("/openapi.json")
        assert answer.status_code == 200, answer.text
        document: dict[str, Any] = answer.json()
        return document

    async def jobs_total(self) -> int:
        return int((await self.client.get("/api/jobs")).json()["total"])


@pytest.fixture
async def api(standin: StandinProcess, tmp_path: Path) -> AsyncIterator[Api]:
    folder = tmp_path / "workflows"
    shutil.copytree(REPO_ROOT / "workflows", folder)
    (folder / f"{BROKEN}.json").write_text('{"3": {"class_type": "KSampler", ')
    # Reloads are the tests' own (`Api.reload`), not the folder watcher's.
    settings = Settings(
        data_dir=tmp_path / "data",
        comfyui_urls=[standin.url],
        workflows_dir=folder,
        workflows_watch=False,
    )
    async with proxy_server(settings) as server:
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
            for backend in server.app.state.services.pool.backends:  # type: ignore[attr-defined]
                assert await backend.socket.wait_connected(10)
            yield Api(client, server, folder)


def png_bytes(size: tuple[int, int] = (80, 48)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, (30, 160, 220)).save(buffer, format="PNG")
    return buffer.getvalue()


def add_workflow(folder: Path, name: str, title: str, **steps: int) -> None:
    """A new workflow: the text-to-video graph under another name and title (its sidecar
    without the seeds' aliases, which name fastwan_t2v), `steps` narrowing its steps."""
    shutil.copy(folder / "fastwan_t2v.json", folder / f"{name}.json")
    sidecar = json.loads((folder / "fastwan_t2v.params.json").read_text())
    sidecar.update(title=title, description=f"{title}: a test workflow.", aliases=[])
    sidecar["params"]["steps"].update(steps)
    (folder / f"{name}.params.json").write_text(json.dumps(sidecar))


def property_range(prop: dict[str, Any]) -> tuple[Any, Any]:
    """(minimum, maximum) of a property, whether or not null is allowed too (anyOf)."""
    for variant in [prop, *prop.get("anyOf", [])]:
        if "minimum" in variant or "maximum" in variant:
            return variant.get("minimum"), variant.get("maximum")
    return None, None


def job_schema(spec: dict[str, Any], path: str, content: str = "application/json") -> Any:
    body = spec["paths"][path]["post"]["requestBody"]["content"][content]["schema"]
    return spec["components"]["schemas"][body["$ref"].removeprefix("#/components/schemas/")]


# -- descriptions ----------------------------------------------------------------------------------


async def test_the_list_describes_every_workflow_and_the_ones_that_do_not_load(api: Api) -> None:
    listed = (await api.client.get("/api/workflows")).json()["workflows"]
    by_id = {item["id"]: item for item in listed}
    assert sorted(by_id) == ["fastwan_i2v", "fastwan_t2v", "fastwan_v2v", BROKEN]

    broken = by_id[BROKEN]
    assert broken["status"] == "not served" and "parameters" not in broken
    assert broken["problems"] and f"{BROKEN}.json" in broken["problems"][0], broken

    models = {m["id"]: m for m in (await api.client.get("/api/models")).json()["models"]}
    for name in ("fastwan_i2v", "fastwan_t2v", "fastwan_v2v"):
        item = by_id[name]
        assert item["status"] == "served" and item["problems"] == [], item
        assert item["endpoint"] == f"/api/workflows/{name}/jobs"
        # The same description the form is built from, model-file readiness included.
        assert {k: v for k, v in item.items() if k not in ("status", "problems", "endpoint")} == (
            models[name]
        )
        assert item["ready"] is True, item  # the stand-in has every model file
    t2v = {p["name"]: p for p in by_id["fastwan_t2v"]["parameters"]}
    assert (t2v["steps"]["min"], t2v["steps"]["max"], t2v["steps"]["default"]) == (1, 100, 8)

    one = await api.client.get("/api/workflows/fastwan_t2v")
    assert one.status_code == 200 and one.json() == by_id["fastwan_t2v"]
    # An alias names the workflow too.
    assert (await api.client.get("/api/workflows/fastwan")).json() == by_id["fastwan_t2v"]
    assert (await api.client.get(f"/api/workflows/{BROKEN}")).json() == broken

    missing = await api.client.get("/api/workflows/nope")
    assert missing.status_code == 404
    assert "nope" in missing.json()["error"]
    assert "fastwan_i2v, fastwan_t2v, fastwan_v2v" in missing.json()["error"]


# -- creating jobs ---------------------------------------------------------------------------------


async def test_a_json_job_under_the_workflows_own_names_completes(api: Api) -> None:
    body = {"prompt": "a paper boat on a pond", "seed": 7, "cfg": 1.5, **SMALL}
    answer = await api.client.post("/api/workflows/fastwan_t2v/jobs", json=body, headers=WAIT)
    assert answer.status_code == 200, answer.text  # ended within the wait
    job = answer.json()
    assert job["status"] == "completed" and job["model_id"] == "fastwan_t2v", job
    assert job["surface"] == "workflow"
    params = job["params"]
    assert (params["length"], params["steps"], params["cfg"], params["seed"]) == (9, 4, 1.5, 7)
    video = await api.client.get(job["video_url"])
    assert video.status_code == 200 and video.headers["content-type"] == "video/mp4"

    # Without a wait: 201 at once, Location naming its status; start=false leaves it pending.
    later = await api.client.post(
        "/api/workflows/fastwan_t2v/jobs", json={"prompt": "later", "start": False, **SMALL}
    )
    assert later.status_code == 201, later.text
    assert later.json()["status"] == "pending" and later.json()["attempt"] == 0
    assert later.headers["location"].endswith(f"/api/jobs/{later.json()['id']}")
    shown = (await api.client.get(later.headers["location"])).json()
    assert shown["id"] == later.json()["id"] and shown["status"] == "pending"


async def test_a_multipart_job_with_an_image_and_one_naming_an_upload(api: Api) -> None:
    fields = {"prompt": "the sky clears", **{k: str(v) for k, v in SMALL.items()}}
    answer = await api.client.post(
        "/api/workflows/fastwan_i2v/jobs",
        data=fields,
        files={"image": ("photo.png", png_bytes(), "image/png")},
        headers=WAIT,
    )
    assert answer.status_code == 200, answer.text
    job = answer.json()
    assert job["status"] == "completed" and job["model_id"] == "fastwan_i2v", job
    assert (job["params"]["length"], job["params"]["steps"]) == (9, 4)  # text parts, coerced
    assert job["request"]["image"] == "photo.png"

    upload = await api.client.post(
        "/api/uploads",
        params={"kind": "image"},
        files={"file": ("p.png", png_bytes(), "image/png")},
    )
    assert upload.status_code == 201, upload.text
    by_id = await api.client.post(
        "/api/workflows/fastwan_i2v/jobs",
        json={"prompt": "again", "image": upload.json()["id"], "start": False, **SMALL},
    )
    assert by_id.status_code == 201, by_id.text
    assert by_id.json()["params"]["image"].startswith("fastwan_")

    # A workflow takes the files it declares, and no others.
    before = await api.jobs_total()
    stray = await api.client.post(
        "/api/workflows/fastwan_t2v/jobs",
        data={"prompt": "x"},
        files={"image": ("photo.png", png_bytes(), "image/png")},
    )
    assert stray.status_code == 422 and stray.json()["field"] == "image", stray.text
    assert await api.jobs_total() == before


async def test_bad_fields_are_a_422_naming_them_and_make_no_job(api: Api) -> None:
    for path, body, field in (
        ("fastwan_t2v", {"prompt": "x", "steps": 0}, "steps"),
        ("fastwan_t2v", {"prompt": "x", "length": 10}, "length"),  # 4k+1
        ("fastwan_t2v", {"prompt": "x", "width": 100}, "width"),  # multiple of 32
        ("fastwan_t2v", {"steps": 4}, "prompt"),  # required
        ("fastwan_t2v", {"prompt": "x", "sampler": "nope"}, "sampler"),
        # Other surfaces' names are not this one's: no renames, no model_id.
        ("fastwan_t2v", {"prompt": "x", "num_frames": 9}, "num_frames"),
        ("fastwan_t2v", {"prompt": "x", "model_id": "fastwan_i2v"}, "model_id"),
        ("fastwan_t2v", {"prompt": "x", "webhook_events": ["job.started"]}, "webhook_events"),
        ("fastwan_t2v", {"prompt": "x", "start": "yes"}, "start"),
        ("fastwan_i2v", {"prompt": "x"}, "image"),  # its image is required
    ):
        answer = await api.client.post(f"/api/workflows/{path}/jobs", json=body)
        assert answer.status_code == 422, (body, answer.text)
        assert answer.json()["field"] == field, (body, answer.json())
    broken_json = await api.client.post(
        "/api/workflows/fastwan_t2v/jobs",
        content=b"{not json",
        headers={"Content-Type": "application/json"},
    )
    assert broken_json.status_code == 422 and broken_json.json()["field"] == "body"
    assert await api.jobs_total() == 0


async def test_a_workflow_not_served_is_a_404_naming_the_served_ones(api: Api) -> None:
    unknown = await api.client.post("/api/workflows/nope/jobs", json={"prompt": "x"})
    assert unknown.status_code == 404, unknown.text
    assert "'nope'; served: fastwan_i2v, fastwan_t2v, fastwan_v2v" in unknown.json()["error"]
    # One that does not load says why.
    broken = await api.client.post(f"/api/workflows/{BROKEN}/jobs", json={"prompt": "x"})
    assert broken.status_code == 404, broken.text
    assert "not loaded" in broken.json()["error"] and f"{BROKEN}.json" in broken.json()["error"]
    assert await api.jobs_total() == 0


async def test_an_idempotency_key_makes_one_job(api: Api) -> None:
    headers = {"Idempotency-Key": "create-once-1"}
    body = {"prompt": "once", "start": False, **SMALL}
    first = await api.client.post("/api/workflows/fastwan_t2v/jobs", json=body, headers=headers)
    again = await api.client.post("/api/workflows/fastwan_t2v/jobs", json=body, headers=headers)
    assert first.status_code == again.status_code == 201, (first.text, again.text)
    assert again.json()["id"] == first.json()["id"]
    assert again.headers.get("idempotent-replayed") == "true"
    assert await api.jobs_total() == 1


# -- the OpenAPI document --------------------------------------------------------------------------


async def test_each_workflow_has_its_own_path_and_request_schema(api: Api) -> None:
    spec = await api.spec()
    paths = spec["paths"]
    assert "/api/workflows/{name}/jobs" not in paths  # documented per workflow instead
    for name in ("fastwan_i2v", "fastwan_t2v", "fastwan_v2v"):
        assert "post" in paths[f"/api/workflows/{name}/jobs"], name
    assert f"/api/workflows/{BROKEN}/jobs" not in paths

    t2v = paths["/api/workflows/fastwan_t2v/jobs"]["post"]
    assert t2v["summary"] == "FastWAN 2.2-5B text to video"
    assert t2v["description"].startswith("Wan 2.2 TI2V 5B with the FastWan LoRA")
    assert set(t2v["requestBody"]["content"]) == {"application/json"}  # it takes no file
    schema = job_schema(spec, "/api/workflows/fastwan_t2v/jobs")
    props = schema["properties"]
    assert property_range(props["steps"]) == (1, 100)
    assert property_range(props["width"]) == (32, 2048)
    assert property_range(props["cfg"]) == (0.0, 20.0)
    assert props["steps"]["default"] == 8
    assert schema["required"] == ["prompt"] and schema["additionalProperties"] is False
    assert {"start", "webhook_url", "webhook_events"} <= set(props)
    assert not {"model_id", "num_frames", "params"} & set(props)  # native's, not this one's

    i2v = paths["/api/workflows/fastwan_i2v/jobs"]["post"]["requestBody"]["content"]
    assert set(i2v) == {"application/json", "multipart/form-data"}
    form = job_schema(spec, "/api/workflows/fastwan_i2v/jobs", "multipart/form-data")
    assert form["properties"]["image"] == {
        "type": "string",
        "format": "binary",
        "description": form["properties"]["image"]["description"],
    }
    assert "image" in form["required"] and property_range(form["properties"]["steps"]) == (1, 100)
    i2v_json = job_schema(spec, "/api/workflows/fastwan_i2v/jobs")
    assert "image" in i2v_json["required"]  # an upload id, in JSON
    assert "image" not in schema["properties"]
    # Every workflow's schemas are components of their own.
    refs = {
        body["schema"]["$ref"]
        for name in ("fastwan_i2v", "fastwan_t2v", "fastwan_v2v")
        for body in paths[f"/api/workflows/{name}/jobs"]["post"]["requestBody"]["content"].values()
    }
    assert len(refs) == 5, refs
    operation_ids = [op["operationId"] for item in paths.values() for op in item.values()]
    assert len(operation_ids) == len(set(operation_ids))


# -- a reload --------------------------------------------------------------------------------------


async def test_a_workflow_added_changed_broken_and_removed_follows_the_folder(api: Api) -> None:
    add_workflow(api.folder, "slow_pan", "Slow pan", max=12)
    await api.reload()
    assert "slow_pan" in api.registry.workflows

    # Its endpoint, its path in the document, and native's model_id all know it.
    spec = await api.spec()
    operation = spec["paths"]["/api/workflows/slow_pan/jobs"]["post"]
    assert operation["summary"] == "Slow pan"
    assert (
        property_range(job_schema(spec, "/api/workflows/slow_pan/jobs")["properties"]["steps"])[1]
        == 12
    )
    answer = await api.client.post(
        "/api/workflows/slow_pan/jobs", json={"prompt": "a slow pan", **SMALL}, headers=WAIT
    )
    assert answer.status_code == 200, answer.text
    assert answer.json()["status"] == "completed" and answer.json()["model_id"] == "slow_pan"
    native = {"model_id": "slow_pan", "prompt": "x", "start": False}
    refused = await api.client.post("/api/jobs", json={**native, "num_inference_steps": 13})
    assert refused.status_code == 422, refused.text
    assert refused.json()["field"] == "num_inference_steps"
    accepted = await api.client.post("/api/jobs", json={**native, "num_inference_steps": 12})
    assert accepted.status_code == 201, accepted.text
    listed = {m["id"] for m in (await api.client.get("/api/models")).json()["models"]}
    assert "slow_pan" in listed

    # Changed: requests are checked against the new version, and the document shows it.
    add_workflow(api.folder, "slow_pan", "Slow pan", max=8)  # 8: the graph's
    await api.reload()
    assert api.registry.workflows["slow_pan"].param("steps").max == 8  # type: ignore[union-attr]
    too_many = await api.client.post(
        "/api/workflows/slow_pan/jobs", json={"prompt": "x", "steps": 9, "start": False}
    )
    assert too_many.status_code == 422 and too_many.json()["field"] == "steps", too_many.text
    steps = job_schema(await api.spec(), "/api/workflows/slow_pan/jobs")["properties"]["steps"]
    assert property_range(steps) == (1, 8)

    # Broken: the last good version serves, and says why the edit is not served.
    (api.folder / "slow_pan.json").write_text("{ half written")
    await api.reload()
    shown = (await api.client.get("/api/workflows/slow_pan")).json()
    assert shown["status"] == "last good version" and "slow_pan.json" in shown["problems"][0]
    still = await api.client.post(
        "/api/workflows/slow_pan/jobs", json={"prompt": "x", "steps": 8, "start": False}
    )
    assert still.status_code == 201, still.text
    assert "/api/workflows/slow_pan/jobs" in (await api.spec())["paths"]

    # Removed: gone from the list, the document and the routes.
    for suffix in (".json", ".params.json"):
        (api.folder / f"fastwan_v2v{suffix}").unlink()
    await api.reload()
    assert "fastwan_v2v" not in api.registry.workflows
    spec = await api.spec()
    assert "/api/workflows/fastwan_v2v/jobs" not in spec["paths"]
    assert not [k for k in spec["components"]["schemas"] if k.startswith("workflow.fastwan_v2v")]
    assert "/api/workflows/slow_pan/jobs" in spec["paths"]
    gone = await api.client.post("/api/workflows/fastwan_v2v/jobs", json={"prompt": "x"})
    assert gone.status_code == 404, gone.text
    names = {w["id"] for w in (await api.client.get("/api/workflows")).json()["workflows"]}
    assert "fastwan_v2v" not in names and "slow_pan" in names


# -- the web UI ------------------------------------------------------------------------------------


@pytest.mark.browser
async def test_the_forms_workflow_list_follows_a_reload(api: Api) -> None:
    """A workflow added while the page is open appears in its picker, with its fields, when
    the picker is used; the open workflow, changed meanwhile, keeps what was typed."""
    from playwright.async_api import async_playwright, expect

    from tests.ui.conftest import CHROMIUM, CHROMIUM_ARGS

    if not CHROMIUM.exists():
        pytest.skip(f"Debian Chromium is not installed at {CHROMIUM}")
    errors: list[str] = []
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
        )
        try:
            page = await browser.new_page(base_url=api.server.url)
            page.set_default_timeout(15_000)
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            await page.goto("/")
            await page.wait_for_selector("html[data-ready=true]")
            picker = page.get_by_test_id("workflow-select")
            await expect(picker).to_have_value("fastwan_t2v")
            await page.get_by_label("Prompt", exact=True).fill("a fox in fresh snow")
            await page.get_by_test_id("param-steps").fill("5")
            await expect(page.get_by_test_id("param-steps-range")).to_contain_text("1–100")

            # A new workflow, and the open one narrowed.
            add_workflow(api.folder, "slow_pan", "Slow pan", max=12)
            sidecar = json.loads((api.folder / "fastwan_t2v.params.json").read_text())
            sidecar["params"]["steps"]["max"] = 50
            (api.folder / "fastwan_t2v.params.json").write_text(json.dumps(sidecar))
            await api.reload()

            await picker.focus()
            await expect(picker.locator("option[value=slow_pan]")).to_have_text("Slow pan")
            await expect(page.get_by_test_id("param-steps-range")).to_contain_text("1–50")
            await expect(page.get_by_label("Prompt", exact=True)).to_have_value(
                "a fox in fresh snow"
            )
            await expect(page.get_by_test_id("param-steps")).to_have_value("5")

            await picker.select_option("slow_pan")
            await expect(page.get_by_test_id("param-steps-range")).to_contain_text("1–12")
            await expect(page.get_by_test_id("workflow-description")).to_have_text(
                "Slow pan: a test workflow."
            )

            # Removed while shown: the page, back in focus, offers what is left.
            for suffix in (".json", ".params.json"):
                (api.folder / f"slow_pan{suffix}").unlink()
            await api.reload()
            await page.evaluate("window.dispatchEvent(new Event('focus'))")
            await expect(picker.locator("option[value=slow_pan]")).to_have_count(0)
            await expect(picker).to_have_value("fastwan_t2v")
            await expect(page.get_by_test_id("param-steps-range")).to_contain_text("1–50")
        finally:
            await browser.close()
    assert not errors, errors
