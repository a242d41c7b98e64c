"""Image-to-video and video-to-video from the web UI, in headless Chromium against the real
proxy and the stand-in ComfyUI: pick a file, see its preview and what the server found in it,
create, watch, play; and the server's refusal of a file shown next to its field.

The form uploads a file as soon as it is picked (POST /api/uploads) and creates the job with
the upload's id. Files are made in memory (Pillow, PyAV) and handed to the file input as
buffers. Nothing sleeps: every wait is Playwright's `expect` or `wait_for_function` with a
timeout.
"""

from __future__ import annotations

import base64
import io
import re
from collections.abc import AsyncIterator
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING, Any

import av
import httpx
import numpy as np
import pytest
from PIL import Image
from playwright.async_api import Locator, Page, Response, expect

from proxy.settings import Settings
from tests.support import ProxyServer, StandinProcess, proxy_server

if TYPE_CHECKING:
    from tests.ui.conftest import PageFactory, Screenshots

pytestmark = pytest.mark.browser

# Small enough that the 413 case needs only a couple of megabytes (the server counts the
# file's bytes as they arrive, so a file just over the limit is refused with its field).
UPLOAD_LIMIT = 1024 * 1024

PHONE = {"width": 375, "height": 812}

# Small videos so the stand-in is quick; a few steps at 0.3 s still show the job running.
SMALL = {"width": "64", "height": "64", "length": "9", "steps": "3"}

VIDEO_LOADED = """(id) => {
  const video = document.querySelector(`[data-job-id="${id}"] video[data-testid=job-video]`);
  return video !== null && video.readyState >= 1 && video.duration > 0;
}"""

IMAGE_PREVIEW = """(width) => {
  const img = document.querySelector("[data-testid=file-preview] img");
  return img !== null && img.complete && img.naturalWidth === width;
}"""

VIDEO_PREVIEW = """() => {
  const video = document.querySelector("[data-testid=file-preview] video");
  return video !== null && video.readyState >= 1 && video.duration > 0;
}"""

# A revoked object URL can no longer be fetched.
URL_ALIVE = """(url) => fetch(url).then(() => true, () => false)"""


@pytest.fixture
async def server(standin: StandinProcess, tmp_path: Path) -> AsyncIterator[ProxyServer]:
    """The conftest's proxy, with a small upload limit (the other cases are far below it)."""
    settings = Settings(
        data_dir=tmp_path / "data",
        comfyui_urls=[standin.url],
        standin=True,
        max_upload_bytes=UPLOAD_LIMIT,
    )
    async with proxy_server(settings) as proxy:
        yield proxy


def png_bytes(size: tuple[int, int] = (64, 64), color: tuple[int, int, int] = (200, 60, 40)):
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, format="PNG")
    return buf.getvalue()


def mp4_bytes(frames: int = 14, size: tuple[int, int] = (96, 64), fps: int = 12) -> bytes:
    """H.264 in MP4 (what Chromium previews), one grey level per frame."""
    buf = io.BytesIO()
    with av.open(buf, "w", format="mp4") as out:
        stream = out.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = size[0], size[1], "yuv420p"
        stream.time_base = Fraction(1, fps)
        for i in range(frames):
            pixels = np.full((size[1], size[0], 3), (i * 17) % 256, dtype=np.uint8)
            frame = av.VideoFrame.from_ndarray(pixels, format="rgb24")
            frame.pts = i
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    return buf.getvalue()


def card(page: Page, job_id: str) -> Locator:
    return page.locator(f'[data-testid=job-card][data-job-id="{job_id}"]')


def file_field(page: Page, name: str) -> Locator:
    return page.locator(f'.field-file[data-field="{name}"]')


def is_upload(response: Response) -> bool:
    return "/api/uploads?" in response.url and response.request.method == "POST"


async def choose_workflow(page: Page, model_id: str) -> None:
    await page.get_by_test_id("workflow-select").select_option(model_id)
    await expect(page.get_by_test_id("workflow-select")).to_have_value(model_id)


async def pick(page: Page, name: str, filename: str, mime: str, data: bytes) -> Response:
    """Set a file on the field's input; the upload's answer."""
    async with page.expect_response(is_upload, timeout=15_000) as answer:
        await page.get_by_test_id(f"file-input-{name}").set_input_files(
            {"name": filename, "mimeType": mime, "buffer": data}
        )
    return await answer.value


async def fill(page: Page, **values: str) -> None:
    for name, value in values.items():
        await page.get_by_test_id(f"param-{name}").fill(value)


async def create(page: Page, button: str = "create") -> dict[str, Any]:
    """Press a create button; the job the API answered with."""
    async with page.expect_response(
        lambda r: r.url.endswith("/api/jobs") and r.request.method == "POST", timeout=15_000
    ) as answer:
        await page.get_by_test_id(button).click()
    response = await answer.value
    assert response.status == 201, await response.text()
    return await response.json()


async def watch_until_played(page: Page, job: dict[str, Any]) -> list[Any]:
    """Wait for the job's card to complete and its player to load; the video's facts."""
    item = card(page, job["id"])
    await expect(item).to_be_visible()
    await expect(item).to_have_attribute("data-status", "completed", timeout=30_000)
    await page.wait_for_function(VIDEO_LOADED, arg=job["id"], timeout=15_000)
    return await item.locator("video").evaluate("v => [v.readyState, v.duration, v.videoWidth]")


async def test_image_to_video_pick_preview_create_play(
    page: Page, server: ProxyServer, shots: Screenshots
):
    await choose_workflow(page, "fastwan_i2v")
    field = file_field(page, "image")
    file_input = page.get_by_test_id("file-input-image")
    await expect(file_input).to_have_attribute(
        "accept", "image/jpeg,image/png,image/webp,.jpg,.jpeg,.png,.webp"
    )
    await expect(field.get_by_test_id("file-preview")).to_be_hidden()
    # Every upload request, to show that creating again sends no file again.
    uploads: list[str] = []
    page.on("request", lambda r: uploads.append(r.url) if "/api/uploads?" in r.url else None)

    answer = await pick(page, "image", "red.png", "image/png", png_bytes())
    assert answer.status == 201, await answer.text()
    upload = await answer.json()
    assert (upload["format"], upload["width"], upload["height"]) == ("PNG", 64, 64)
    await page.wait_for_function(IMAGE_PREVIEW, arg=64, timeout=10_000)
    first_url = await field.locator("[data-testid=file-preview] img").get_attribute("src")
    assert first_url and first_url.startswith("blob:")
    info = field.get_by_test_id("file-info")
    await expect(info).to_have_attribute("data-state", "ready")
    await expect(info).to_contain_text("PNG · 64×64")
    await shots.take(page, "image-picked")

    await page.get_by_label("Prompt", exact=True).fill("the red square starts to glow")
    await fill(page, **SMALL)
    job = await create(page)
    assert job["model_id"] == "fastwan_i2v"
    assert job["request"]["image"] == upload["id"]
    await shots.take(page, "created")
    facts = await watch_until_played(page, job)
    assert facts[0] >= 1 and facts[1] > 0 and facts[2] == 64, facts
    await shots.take(page, "completed")

    # The same image again: the job refers to the upload already made.
    again = await create(page, "create-pending")
    assert again["request"]["image"] == upload["id"]
    assert len(uploads) == 1, uploads

    # Another image replaces the first: its preview URL is revoked, its upload deleted.
    async with page.expect_request(
        lambda r: r.method == "DELETE" and r.url.endswith(f"/api/uploads/{upload['id']}"),
        timeout=10_000,
    ):
        second = await pick(page, "image", "wide.png", "image/png", png_bytes((96, 64)))
    assert second.status == 201
    await page.wait_for_function(IMAGE_PREVIEW, arg=96, timeout=10_000)
    assert not await page.evaluate(URL_ALIVE, first_url)
    await expect(info).to_contain_text("96×64")

    # Reusing a job's settings keeps the image chosen here (the job's own cannot be fetched).
    await card(page, job["id"]).get_by_test_id("job-reuse").click()
    await expect(page.get_by_test_id("param-steps")).to_have_value("3")
    await expect(page.get_by_test_id("form-status")).to_contain_text(
        "Input files are not part of the settings: the image chosen here stays"
    )
    await page.wait_for_function(IMAGE_PREVIEW, arg=96, timeout=10_000)

    # A reload keeps the typed settings (the draft) but not the file.
    await page.reload()
    await page.wait_for_selector("html[data-ready=true]")
    await expect(page.get_by_test_id("workflow-select")).to_have_value("fastwan_i2v")
    prompt = page.get_by_label("Prompt", exact=True)
    await expect(prompt).to_have_value("the red square starts to glow")
    await expect(page.get_by_test_id("param-width")).to_have_value("64")
    await expect(file_field(page, "image").get_by_test_id("file-preview")).to_be_hidden()
    assert await page.get_by_test_id("file-input-image").evaluate("i => i.files.length") == 0


async def test_video_to_video_pick_preview_create_play(
    page: Page, server: ProxyServer, shots: Screenshots
):
    await choose_workflow(page, "fastwan_v2v")
    field = file_field(page, "video")
    answer = await pick(page, "video", "grey ramp.mp4", "video/mp4", mp4_bytes())
    assert answer.status == 201, await answer.text()
    upload = await answer.json()
    assert (upload["format"], upload["frames"]) == ("MP4", 14)
    await page.wait_for_function(VIDEO_PREVIEW, timeout=10_000)
    info = field.get_by_test_id("file-info")
    await expect(info).to_have_attribute("data-state", "ready")
    await expect(info).to_contain_text("96×64 · 14 frames at 12 fps")
    await shots.take(page, "video-picked")

    await page.get_by_label("Prompt", exact=True).fill("the same ramp, as watercolour")
    await fill(page, **SMALL, strength="0.6")
    job = await create(page)
    assert job["model_id"] == "fastwan_v2v"
    assert job["request"]["video"] == upload["id"]
    assert job["params"]["strength"] == 0.6
    facts = await watch_until_played(page, job)
    assert facts[0] >= 1 and facts[1] > 0 and facts[2] == 64, facts
    await shots.take(page, "completed")


async def test_refused_files_are_reported_next_to_the_field(
    page: Page, server: ProxyServer, shots: Screenshots
):
    await choose_workflow(page, "fastwan_i2v")
    field = file_field(page, "image")
    error = page.get_by_test_id("field-error-image")
    file_input = page.get_by_test_id("file-input-image")

    # No image: the server says the workflow needs one.
    async with page.expect_response(lambda r: r.url.endswith("/api/jobs"), timeout=15_000) as a:
        await page.get_by_test_id("create").click()
    refused = await a.value
    assert refused.status == 422 and (await refused.json())["field"] == "image"
    await expect(error).to_be_visible()
    await expect(error).to_contain_text("image file is required")

    # Text named like an image: refused by its bytes, on pick, before any Create.
    answer = await pick(page, "image", "photo.png", "image/png", b"just some words\n" * 8)
    assert answer.status == 422
    body = await answer.json()
    assert "text" in body["error"], body
    await expect(error).to_be_visible()
    await expect(error).to_contain_text("the file is text; send an image (JPEG, PNG or WebP)")
    # The form-wide "an image file is required" no longer applies once a file is picked.
    await expect(page.get_by_test_id("form-error")).to_be_hidden()
    await expect(file_input).to_have_attribute("aria-invalid", "true")
    await expect(field.get_by_test_id("file-info")).to_have_attribute("data-state", "failed")
    await expect(field.locator(".file-preview-note")).to_contain_text("cannot show a preview")
    await shots.take(page, "text-refused")

    # Create does not go ahead with a refused file, and says why.
    jobs_posted: list[str] = []
    page.on("request", lambda r: jobs_posted.append(r.url) if r.url.endswith("/api/jobs") else None)
    await page.get_by_test_id("create").click()
    await expect(page.get_by_test_id("form-error")).to_contain_text("image: the file is text")
    await expect(error).to_be_visible()
    assert jobs_posted == []

    # Over the upload limit: the 413 goes next to the field too.
    too_big = png_bytes() + bytes(UPLOAD_LIMIT + 1024)
    answer = await pick(page, "image", "huge.png", "image/png", too_big)
    assert answer.status == 413
    await expect(error).to_contain_text("larger than the upload limit of 1 MB")
    await shots.take(page, "too-large")

    # Far over it: refused from its Content-Length before it is read; that answer names no
    # field, but an upload concerns only its file, so it goes next to the field all the same.
    answer = await pick(
        page, "image", "huger.png", "image/png", png_bytes() + bytes(6 * UPLOAD_LIMIT)
    )
    assert answer.status == 413
    assert "field" not in await answer.json()
    await expect(error).to_contain_text("the upload limit is 1 MB")

    # A good file clears the error; Remove clears the choice.
    answer = await pick(page, "image", "ok.png", "image/png", png_bytes())
    assert answer.status == 201
    await expect(error).to_be_hidden()
    await expect(file_input).not_to_have_attribute("aria-invalid", "true")
    await page.wait_for_function(IMAGE_PREVIEW, arg=64, timeout=10_000)
    upload_id = (await answer.json())["id"]
    async with page.expect_response(
        lambda r: r.request.method == "DELETE" and r.url.endswith(f"/api/uploads/{upload_id}"),
        timeout=10_000,
    ) as deleted:
        await field.get_by_test_id("file-clear").click()
    assert (await deleted.value).status == 200
    await expect(field.get_by_test_id("file-preview")).to_be_hidden()
    assert await file_input.evaluate("i => i.files.length") == 0
    async with httpx.AsyncClient(base_url=server.url) as client:
        assert (await client.get(f"/api/uploads/{upload_id}")).status_code == 404

    # Dropping a file on the field picks it like the input does.
    dropped = await page.evaluate_handle(
        """(b64) => {
          const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
          const transfer = new DataTransfer();
          transfer.items.add(new File([bytes], "dropped.png", { type: "image/png" }));
          return transfer;
        }""",
        base64.b64encode(png_bytes((32, 32))).decode(),
    )
    async with page.expect_response(is_upload, timeout=15_000) as answer:
        await field.dispatch_event("dragover", {"dataTransfer": dropped})
        await expect(field).to_have_class(re.compile(r"\bis-dragover\b"))
        await field.dispatch_event("drop", {"dataTransfer": dropped})
    assert (await answer.value).status == 201
    await page.wait_for_function(IMAGE_PREVIEW, arg=32, timeout=10_000)
    await expect(field).not_to_have_class(re.compile(r"\bis-dragover\b"))
    assert await file_input.evaluate("i => i.files[0].name") == "dropped.png"


async def test_file_field_fits_a_phone(
    open_page: PageFactory, server: ProxyServer, shots: Screenshots
):
    page = await open_page(PHONE, phone=True)
    await choose_workflow(page, "fastwan_v2v")
    answer = await pick(
        page, "video", "a rather long file name for a phone.mp4", "video/mp4", mp4_bytes()
    )
    assert answer.status == 201
    await page.wait_for_function(VIDEO_PREVIEW, timeout=10_000)
    await expect(page.get_by_test_id("file-info")).to_have_attribute("data-state", "ready")
    widths = await page.evaluate(
        """() => ({
          scroll: document.documentElement.scrollWidth,
          client: document.documentElement.clientWidth,
          widest: Math.max(...[...document.querySelectorAll(".field-file *")]
            .filter((e) => e.getClientRects().length)
            .map((e) => e.getBoundingClientRect().right)),
        })"""
    )
    assert widths["scroll"] <= widths["client"], widths
    assert widths["widest"] <= widths["client"] + 0.5, widths
    await shots.take(page, "phone")
