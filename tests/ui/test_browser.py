"""The web UI in headless Chromium against the real proxy and the stand-in ComfyUI.

Nothing sleeps: every wait is Playwright's `expect` or `wait_for_function` with a timeout.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import httpx
import pytest
from playwright.async_api import Locator, Page, expect

from tests.support import ProxyServer

if TYPE_CHECKING:
    from tests.ui.conftest import PageFactory, Screenshots

pytestmark = pytest.mark.browser

PHONE = {"width": 375, "height": 812}

# Small videos so the stand-in is quick; 4 steps at 0.3 s still show the bar moving.
SMALL = {"width": "64", "height": "64", "length": "9", "steps": "4"}

PROGRESS_OF = """([id, above]) => {
  const bar = document.querySelector(`[data-job-id="${id}"] [data-testid=job-progress]`);
  return bar !== null && Number(bar.getAttribute("aria-valuenow")) > above;
}"""

VIDEO_LOADED = """(id) => {
  const video = document.querySelector(`[data-job-id="${id}"] video[data-testid=job-video]`);
  return video !== null && video.readyState >= 1 && video.duration > 0;
}"""


def card(page: Page, job_id: str) -> Locator:
    return page.locator(f'[data-testid=job-card][data-job-id="{job_id}"]')


async def progress(page: Page, job_id: str) -> float:
    value = await card(page, job_id).get_by_test_id("job-progress").get_attribute("aria-valuenow")
    return float(value or 0)


async def fill_form(page: Page, prompt: str, **values: str) -> None:
    await page.get_by_label("Prompt", exact=True).fill(prompt)
    for name, value in values.items():
        await page.get_by_test_id(f"param-{name}").fill(value)


async def create(page: Page, button: str = "create") -> dict[str, Any]:
    """Press a create button; the job the API answered with."""
    async with page.expect_response(
        lambda r: r.url.endswith("/api/jobs") and r.request.method == "POST"
    ) as answer:
        await page.get_by_test_id(button).click()
    response = await answer.value
    assert response.status == 201, await response.text()
    return await response.json()


async def test_create_watch_progress_play_and_reload(
    page: Page, server: ProxyServer, shots: Screenshots
):
    banner = page.get_by_test_id("standin-banner")
    await expect(banner).to_be_visible()
    await expect(banner).to_contain_text("synthetic test patterns")
    await expect(page.get_by_test_id("backend-status")).to_have_attribute("data-state", "up")
    await expect(page.get_by_test_id("feed-status")).to_have_attribute("data-state", "live")
    # The form follows the declarations: ranges, steps, the 4k+1 hint, advanced ones folded.
    await expect(page.get_by_test_id("param-width")).to_have_attribute("step", "32")
    await expect(page.get_by_test_id("param-length")).to_have_attribute("step", "4")
    await expect(page.get_by_test_id("param-length-range")).to_contain_text("4k+1")
    await expect(page.get_by_test_id("param-sampler")).to_be_hidden()
    await shots.take(page, "loaded")

    await fill_form(page, "a paper boat drifting on a pond", **SMALL)
    job = await create(page)
    job_id = job["id"]
    item = card(page, job_id)
    await expect(item).to_be_visible()
    await expect(item.get_by_test_id("job-prompt")).to_have_text("a paper boat drifting on a pond")
    await expect(item.get_by_test_id("job-seed")).to_have_text(str(job["seed"]))

    await page.wait_for_function(PROGRESS_OF, arg=[job_id, 0], timeout=20_000)
    first = await progress(page, job_id)
    await shots.take(page, "running")
    await page.wait_for_function(PROGRESS_OF, arg=[job_id, first], timeout=20_000)
    assert await progress(page, job_id) > first

    await expect(item).to_have_attribute("data-status", "completed", timeout=30_000)
    await page.wait_for_function(VIDEO_LOADED, arg=job_id, timeout=15_000)
    facts = await item.locator("video").evaluate("v => [v.readyState, v.duration, v.videoWidth]")
    assert facts[0] >= 1 and facts[1] > 0 and facts[2] == 64, facts
    download = item.get_by_test_id("job-download")
    assert (await download.get_attribute("href")).startswith(f"/api/jobs/{job_id}/video")
    await shots.take(page, "completed")

    await page.reload()
    await page.wait_for_selector("html[data-ready=true]")
    await expect(card(page, job_id)).to_have_attribute("data-status", "completed")
    await expect(page.get_by_test_id("job-card")).to_have_count(1)
    await page.wait_for_function(VIDEO_LOADED, arg=job_id, timeout=15_000)
    await expect(page.get_by_test_id("standin-banner")).to_be_visible()
    await shots.take(page, "reloaded")


async def test_stop_start_again_and_delete(page: Page, server: ProxyServer, shots: Screenshots):
    await fill_form(page, "a slow pan across a mountain lake", **{**SMALL, "steps": "20"})
    job = await create(page)
    item = card(page, job["id"])
    await page.wait_for_function(PROGRESS_OF, arg=[job["id"], 0], timeout=20_000)
    await expect(item).to_have_attribute("data-status", "running")
    await shots.take(page, "running")

    await item.get_by_test_id("job-stop").click()
    await expect(item).to_have_attribute("data-status", "stopped")
    await expect(item.get_by_test_id("job-status")).to_have_text("stopped")
    await expect(item.get_by_test_id("job-stop")).to_be_hidden()
    await shots.take(page, "stopped")

    await item.get_by_test_id("job-start").click()
    await expect(item.get_by_test_id("job-attempt")).to_have_text("attempt 2")
    await expect(item).to_have_attribute("data-status", "running", timeout=20_000)
    await shots.take(page, "attempt-2")

    # Created without starting: pending, with a Start button.
    await fill_form(page, "a job that waits")
    pending = await create(page, "create-pending")
    waiting = card(page, pending["id"])
    await expect(waiting).to_have_attribute("data-status", "pending")
    await expect(waiting.get_by_test_id("job-start")).to_be_visible()
    assert await page.get_by_test_id("job-card").first.get_attribute("data-job-id") == pending["id"]

    # Delete asks first; cancelling keeps the job.
    dialog = page.get_by_test_id("confirm-dialog")
    await item.get_by_test_id("job-delete").click()
    await expect(dialog).to_be_visible()
    await shots.take(page, "confirm-delete")
    await page.get_by_test_id("confirm-cancel").click()
    await expect(dialog).to_be_hidden()
    await expect(item).to_be_visible()

    await item.get_by_test_id("job-delete").click()
    await page.get_by_test_id("confirm-delete").click()
    await expect(item).to_have_count(0)
    await expect(page.get_by_test_id("job-card")).to_have_count(1)
    async with httpx.AsyncClient(base_url=server.url) as client:
        assert (await client.get(f"/api/jobs/{job['id']}")).status_code == 404
    await shots.take(page, "deleted")

    await page.reload()
    await page.wait_for_selector("html[data-ready=true]")
    await expect(page.get_by_test_id("job-card")).to_have_count(1)
    await expect(card(page, pending["id"])).to_have_attribute("data-status", "pending")


async def test_validation_error_next_to_the_field_and_reuse_of_settings(
    page: Page, server: ProxyServer, shots: Screenshots
):
    await fill_form(page, "a square that is too wide", **{**SMALL, "width": "1000"})
    async with page.expect_response(lambda r: r.url.endswith("/api/jobs")) as answer:
        await page.get_by_test_id("create").click()
    assert (await answer.value).status == 422
    field_error = page.get_by_test_id("field-error-width")
    await expect(field_error).to_be_visible()
    await expect(field_error).to_contain_text("multiple of 32")
    await expect(page.get_by_test_id("param-width")).to_have_attribute("aria-invalid", "true")
    await expect(page.get_by_test_id("form-error")).to_contain_text("width")
    await expect(page.get_by_test_id("job-card")).to_have_count(0)
    await shots.take(page, "width-1000")

    # Correcting the field clears its error.
    await page.get_by_test_id("param-width").fill("64")
    await expect(field_error).to_be_hidden()

    # A job made elsewhere arrives live; its settings go back into the form with the seed
    # exact (2^64-1 is past what a JavaScript number holds), and travel back exact too.
    top_seed = str(2**64 - 1)
    async with httpx.AsyncClient(base_url=server.url) as client:
        body = {
            "prompt": "seed at the top",
            "seed": int(top_seed),
            "num_inference_steps": 3,
            "start": False,
        }
        made = (await client.post("/api/jobs", json=body)).json()
    item = card(page, made["id"])
    await expect(item.get_by_test_id("job-seed")).to_have_text(top_seed)
    await item.get_by_test_id("job-reuse").click()
    await expect(page.get_by_test_id("param-seed")).to_have_value(top_seed)
    await expect(page.get_by_test_id("param-steps")).to_have_value("3")
    await expect(page.get_by_label("Prompt", exact=True)).to_have_value("seed at the top")
    again = await create(page, "create-pending")
    assert again["id"] != made["id"]
    assert again["params"]["seed"] == int(top_seed) and again["params"]["steps"] == 3
    await expect(card(page, again["id"]).get_by_test_id("job-seed")).to_have_text(top_seed)
    await shots.take(page, "reused-settings")


async def test_phone_width_has_no_horizontal_overflow(
    open_page: PageFactory, server: ProxyServer, shots: Screenshots
):
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
        body = {
            "prompt": "phone " + "x" * 300,
            "width": 64,
            "height": 64,
            "num_frames": 9,
            "num_inference_steps": 2,
        }
        done = (await client.post("/api/jobs", json=body)).json()
        await client.post("/api/jobs", json={"prompt": "not started", "start": False})

    page = await open_page(PHONE, phone=True)
    await expect(page.get_by_test_id("job-card")).to_have_count(2)
    finished = card(page, done["id"])
    await expect(finished).to_have_attribute("data-status", "completed", timeout=20_000)
    await page.wait_for_function(VIDEO_LOADED, arg=done["id"])
    await expect(page.get_by_test_id("standin-banner")).to_be_visible()
    widths = await page.evaluate(
        """() => ({
          scroll: document.documentElement.scrollWidth,
          client: document.documentElement.clientWidth,
          widest: Math.max(...[...document.querySelectorAll("body *")]
            .filter((e) => e.getClientRects().length)
            .map((e) => e.getBoundingClientRect().right)),
        })"""
    )
    assert widths["client"] == PHONE["width"], widths
    assert widths["scroll"] <= widths["client"], widths
    assert widths["widest"] <= widths["client"] + 0.5, widths
    await shots.take(page, "phone")


async def test_falls_back_to_polling_when_the_event_stream_fails(
    open_page: PageFactory, server: ProxyServer, shots: Screenshots
):
    page = await open_page(go=False)
    await page.route("**/api/events", lambda route: route.fulfill(status=503, body="no streams"))
    await page.goto("/")
    await expect(page.get_by_test_id("feed-status")).to_have_attribute("data-state", "polling")

    async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
        body = {
            "prompt": "made elsewhere",
            "width": 64,
            "height": 64,
            "num_frames": 9,
            "num_inference_steps": 2,
        }
        job = (await client.post("/api/jobs", json=body)).json()
    # No events reach the page: the card arrives, and completes, through polling.
    made = card(page, job["id"])
    await expect(made).to_have_attribute("data-status", "completed", timeout=20_000)
    await shots.take(page, "polling")

    await page.unroute("**/api/events")
    feed = page.get_by_test_id("feed-status")
    await expect(feed).to_have_attribute("data-state", "live", timeout=20_000)
