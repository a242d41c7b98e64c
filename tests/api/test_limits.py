"""Bounded requests and answers that leak nothing: body caps, header-checked image sizes,
range-checked paging, NUL bytes, strict booleans, and the errors of a full disk."""

from __future__ import annotations

import errno
import io
from collections.abc import AsyncIterator

import httpx
import pytest
from fastapi import FastAPI
from PIL import Image

from proxy.api.errors import install_error_handlers
from proxy.launcher import free_port
from proxy.settings import Settings
from tests.support import proxy_server


@pytest.fixture
async def client(tmp_path) -> AsyncIterator[httpx.AsyncClient]:
    settings = Settings(
        data_dir=tmp_path,
        comfyui_urls=[f"http://127.0.0.1:{free_port()}"],
        max_json_bytes=10_000,
    )
    async with proxy_server(settings) as proxy:
        async with httpx.AsyncClient(base_url=proxy.url, timeout=10) as http:
            yield http


async def test_a_json_body_over_the_cap_is_413_before_it_is_parsed(client) -> None:
    big = b'{"prompt": "' + b"x" * 20_000 + b'"}'
    r = await client.post("/api/jobs", content=big, headers={"content-type": "application/json"})
    assert r.status_code == 413 and "MAX_JSON_BYTES" in r.json()["error"]

    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: counted as it arrives
        for _ in range(5):
            yield b" " * 4_000
        yield b'{"prompt": "x"}'

    r = await client.post(
        "/generate", content=chunks(), headers={"content-type": "application/json"}
    )
    assert r.status_code == 413
    # Under the cap, the same route works.
    r = await client.post("/generate", json={"prompt": "fine", "width": 64, "height": 64})
    assert r.status_code == 200


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        ("/api/jobs", {"prompt": "a\x00b"}, "prompt"),
        ("/generate", {"prompt": "ok", "negative_prompt": "\x00"}, "negative_prompt"),
        ("/api/jobs", {"prompt": "ok", "params": {"sampler": "euler\x00"}}, "params"),
        ("/api/session", {"scenes": {"hook": "a\x00"}}, "scenes"),
        ("/api/jobs", {"prompt": "ok", "start": "yes"}, "start"),
        ("/api/jobs", {"prompt": "ok", "start": 1}, "start"),
    ],
)
async def test_bad_text_and_loose_booleans_are_422_naming_the_field(
    client, path: str, body: dict, field: str
) -> None:
    r = await client.post(path, json=body)
    assert r.status_code == 422, r.text
    assert r.json()["field"].split(".")[0] == field


@pytest.mark.parametrize(
    "path",
    [
        "/api/jobs?offset=9223372036854775808",
        "/api/batches?offset=100000000000000000000000000000000000",
        "/jobs?limit=0",
        "/jobs?offset=-1",
        "/api/jobs?limit=5000",
    ],
)
async def test_paging_out_of_range_is_422(client, path: str) -> None:
    r = await client.get(path)
    assert r.status_code == 422 and r.json()["field"] in ("offset", "limit")


async def test_long_file_names_are_not_found(client) -> None:
    for path in ("/outputs/", "/api/videos/"):
        r = await client.get(path + "x" * 300 + ".mp4")
        assert r.status_code == 404 and "error" in r.json()


async def test_an_image_too_large_is_refused_from_its_header_without_a_path(client) -> None:
    buf = io.BytesIO()
    Image.new("L", (5000, 5000)).save(buf, format="PNG")  # small file, 25 megapixels
    r = await client.post(
        "/api/uploads", params={"kind": "image"}, files={"file": ("big.png", buf.getvalue())}
    )
    assert r.status_code == 422 and r.json()["field"] == "file"
    assert "5000x5000" in r.json()["error"] and "megapixels" in r.json()["error"]
    broken = b"\x89PNG\r\n\x1a\n" + b"\x00" * 200  # a PNG signature and nothing decodable
    r = await client.post(
        "/api/uploads", params={"kind": "image"}, files={"file": ("b.png", broken)}
    )
    assert r.status_code == 422
    assert "/" not in r.json()["error"].split("(", 1)[-1], r.json()["error"]
    assert ".part" not in r.text


async def test_a_full_disk_and_a_defect_say_what_to_do_and_nothing_else() -> None:
    app = FastAPI()
    install_error_handlers(app)

    @app.get("/full")
    async def full() -> None:
        raise OSError(errno.ENOSPC, "No space left on device", "/srv/data/outputs/x.mp4")

    @app.get("/defect")
    async def defect() -> None:
        raise KeyError("/srv/data/secret")

    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
        r = await c.get("/full")
        assert r.status_code == 507 and "storage is full" in r.json()["error"]
        r = await c.get("/defect")
        assert r.status_code == 500
        for leak in ("/srv", "KeyError", "Traceback"):
            assert leak not in r.text
