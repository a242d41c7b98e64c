"""No cross-origin access by default; CORS_ORIGINS is an allowlist."""

from __future__ import annotations

import httpx

from proxy.launcher import free_port
from proxy.settings import Settings
from tests.support import proxy_server

PREFLIGHT = {"Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "x-api-key"}


async def _preflight(settings: Settings, origin: str) -> httpx.Response:
    async with proxy_server(settings) as proxy:
        async with httpx.AsyncClient(base_url=proxy.url, timeout=10) as client:
            return await client.options("/api/jobs", headers={"Origin": origin, **PREFLIGHT})


async def test_no_origin_is_allowed_by_default(tmp_path) -> None:
    settings = Settings(data_dir=tmp_path, comfyui_urls=[f"http://127.0.0.1:{free_port()}"])
    r = await _preflight(settings, "https://app.example")
    assert "access-control-allow-origin" not in r.headers


async def test_listed_origins_only(tmp_path) -> None:
    settings = Settings(
        data_dir=tmp_path,
        comfyui_urls=[f"http://127.0.0.1:{free_port()}"],
        cors_origins=["https://app.example"],
        api_keys=["alice:k1"],
    )
    allowed = await _preflight(settings, "https://app.example")
    assert allowed.status_code == 200
    assert allowed.headers["access-control-allow-origin"] == "https://app.example"
    assert "x-api-key" in allowed.headers["access-control-allow-headers"].lower()
    other = await _preflight(settings, "https://evil.example")
    assert "access-control-allow-origin" not in other.headers
