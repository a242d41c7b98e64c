"""The /api/model-files router, on an app wired the way the lead's lifespan wires it."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from proxy.api.auth import authenticate
from proxy.api.deps import get_downloads, get_presence
from proxy.api.errors import install_error_handlers
from proxy.api.modelfiles import router
from proxy.auth import ANONYMOUS
from proxy.db import Database
from proxy.errors import ComfyUnavailable
from proxy.modelfiles.downloads import DownloadManager
from proxy.modelfiles.manifest import Manifest
from proxy.modelfiles.presence import ModelPresence
from proxy.services import get_services
from proxy.settings import Settings

from .fileserver import FileServer
from .helpers import REPO, Blob, entry, make_blob, manifest_of

AppFactory = Callable[..., Any]


@pytest.fixture
def blob() -> Blob:
    return make_blob()


@pytest.fixture
def manifest(blob: Blob) -> Manifest:
    return manifest_of(
        entry("model", folder="diffusion_models", blob=blob, workflows=("t2v",)),
        entry("vae", folder="vae", workflows=("t2v", "i2v")),
    )


def build_app(
    settings: Settings, manifest: Manifest, presence: ModelPresence | None = None
) -> FastAPI:
    """The router with its two dependencies overridden, as the proxy's lifespan provides."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        database = Database(settings.db_url)
        await database.migrate()
        async with httpx.AsyncClient(trust_env=False, timeout=10.0) as client:
            downloads = DownloadManager(
                database, settings, client, manifest=manifest, progress_interval_s=0.05
            )
            await downloads.start()
            app.dependency_overrides[get_downloads] = lambda: downloads
            app.state.downloads = downloads  # for the test to reach it
            try:
                yield
            finally:
                await downloads.close()
                await database.close()

    app = FastAPI(lifespan=lifespan)

    app.dependency_overrides[authenticate] = lambda: ANONYMOUS  # an open proxy
    app.dependency_overrides[get_presence] = lambda: presence
    install_error_handlers(app)
    app.include_router(router)
    return app


@asynccontextmanager
async def running(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://proxy") as client:
            yield client


@pytest.fixture
def api_settings(tmp_path: Path, server: FileServer) -> Settings:
    (tmp_path / "data").mkdir()
    return Settings(
        data_dir=tmp_path / "data", models_dir=tmp_path / "models", hf_endpoint=server.url
    )


async def test_overview_without_presence(api_settings: Settings, manifest: Manifest) -> None:
    async with running(build_app(api_settings, manifest)) as client:
        response = await client.get("/api/model-files")
    assert response.status_code == 200
    body = response.json()
    assert body["presence_known"] is False
    model = body["models"][0]
    assert model["id"] == "model"
    assert model["present"] is None
    assert model["download"] is None
    assert model["source"] == {
        "type": "huggingface",
        "repo": REPO,
        "path": "files/model.safetensors",
        "revision": "main",
    }
    assert model["source_url"].endswith(f"/{REPO}/resolve/main/files/model.safetensors")
    assert model["target_path"] == str(
        api_settings.models_dir / "diffusion_models" / "model.safetensors"  # type: ignore[operator]
    )
    assert {w["workflow"]: w["ready"] for w in body["workflows"]} == {"t2v": None, "i2v": None}


async def test_overview_with_presence(api_settings: Settings, manifest: Manifest) -> None:
    listing = {"diffusion_models": ["model.safetensors"], "vae": []}
    asked: list[list[str]] = []

    async def fetch(folders: list[str]) -> dict[str, list[str]]:
        asked.append(folders)
        return listing

    app = build_app(api_settings, manifest, ModelPresence(manifest, fetch))
    async with running(app) as client:
        body = (await client.get("/api/model-files")).json()
    assert body["presence_known"] is True
    assert {m["id"]: m["present"] for m in body["models"]} == {"model": True, "vae": False}
    workflows = {w["workflow"]: w for w in body["workflows"]}
    assert workflows["t2v"]["ready"] is False
    assert workflows["t2v"]["missing"] == ["vae.safetensors"]
    assert asked == [["diffusion_models", "vae"]]  # each folder the manifest uses, once


async def test_presence_source_failing_means_unknown(
    api_settings: Settings, manifest: Manifest
) -> None:
    async def fetch(folders: list[str]) -> dict[str, list[str]]:
        raise ComfyUnavailable("ComfyUI at http://127.0.0.1:8188 is not reachable")

    app = build_app(api_settings, manifest, ModelPresence(manifest, fetch))
    async with running(app) as client:
        response = await client.get("/api/model-files")
    assert response.status_code == 200
    assert response.json()["presence_known"] is False


async def test_download_lifecycle_over_http(
    api_settings: Settings, manifest: Manifest, server: FileServer, blob: Blob
) -> None:
    server.add(f"{REPO}/files/model.safetensors", blob.data)
    app = build_app(api_settings, manifest)
    async with running(app) as client:
        response = await client.post("/api/model-files/model/download")
        assert response.status_code == 202
        started = response.json()
        assert started["model_id"] == "model"
        assert started["status"] in ("queued", "running")

        manager: DownloadManager = app.state.downloads
        await manager.wait_for(started["id"], ["completed", "failed"], 15)

        one = (await client.get(f"/api/model-files/downloads/{started['id']}")).json()
        assert one["status"] == "completed", one["error"]
        assert one["percent"] == 100.0
        assert one["sha256"] == blob.sha256
        listed = (await client.get("/api/model-files/downloads")).json()["downloads"]
        assert [d["id"] for d in listed] == [started["id"]]
        filtered = await client.get("/api/model-files/downloads", params={"model_id": "vae"})
        assert filtered.json()["downloads"] == []
        overview = (await client.get("/api/model-files")).json()
        assert overview["models"][0]["download"]["id"] == started["id"]

        conflict = await client.delete(f"/api/model-files/downloads/{started['id']}")
        assert conflict.status_code == 409
        assert "already completed" in conflict.json()["error"]


async def test_cancel_over_http(
    api_settings: Settings, manifest: Manifest, server: FileServer, blob: Blob
) -> None:
    served = server.add(f"{REPO}/files/model.safetensors", blob.data, mode="stall")
    app = build_app(api_settings, manifest)
    async with running(app) as client:
        started = (await client.post("/api/model-files/model/download")).json()
        await served.halfway.wait()
        response = await client.delete(f"/api/model-files/downloads/{started['id']}")
        assert response.status_code == 200
        assert response.json()["status"] == "cancelled"


async def test_errors(api_settings: Settings, manifest: Manifest, tmp_path: Path) -> None:
    async with running(build_app(api_settings, manifest)) as client:
        unknown = await client.post("/api/model-files/nope/download")
        assert unknown.status_code == 404
        body = unknown.json()
        assert "Known ids: model, vae" in body["error"]
        assert body["known_ids"] == ["model", "vae"]
        missing = await client.get("/api/model-files/downloads/doesnotexist")
        assert missing.status_code == 404
        assert (await client.delete("/api/model-files/downloads/doesnotexist")).status_code == 404
        bad_limit = await client.get("/api/model-files/downloads", params={"limit": 0})
        assert bad_limit.status_code == 422

    unconfigured = Settings(data_dir=api_settings.data_dir)
    async with running(build_app(unconfigured, manifest)) as client:
        response = await client.post("/api/model-files/vae/download")
        assert response.status_code == 503
        assert "set MODELS_DIR" in response.json()["error"]
        overview = (await client.get("/api/model-files")).json()
        assert overview["models"][0]["target_path"] is None


async def test_without_manager_and_openapi(manifest: Manifest) -> None:
    app = FastAPI()
    app.dependency_overrides[authenticate] = lambda: ANONYMOUS  # an open proxy
    install_error_handlers(app)
    app.include_router(router)
    # What the lifespan leaves when the manifest cannot be loaded.
    reason = "model files are unavailable: comfyui/models.json: bad JSON"
    broken = SimpleNamespace(downloads=None, presence=None, problems={"model_files": reason})
    app.dependency_overrides[get_services] = lambda: broken
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://proxy") as client:
        response = await client.get("/api/model-files/downloads")
        assert response.status_code == 503
        assert response.json()["error"] == reason
        schema = (await client.get("/openapi.json")).json()
    paths = schema["paths"]
    assert set(paths) == {
        "/api/model-files",
        "/api/model-files/{model_id}/download",
        "/api/model-files/downloads",
        "/api/model-files/downloads/{download_id}",
    }
    assert paths["/api/model-files/{model_id}/download"]["post"]["summary"]
    record = schema["components"]["schemas"]["DownloadRecord"]
    assert {"percent", "eta_s", "status", "bytes_done"} <= set(record["properties"])
