"""The Batches view and the scenes form, in headless Chromium against the real proxy and the
stand-in ComfyUI (small videos, 2 steps, so a batch takes seconds).

Nothing sleeps: every wait is Playwright's `expect` or `wait_for_function` with a timeout.
"""

from __future__ import annotations

import io
import zipfile
from typing import TYPE_CHECKING

import httpx
import pytest
from playwright.async_api import Locator, Page, expect

from tests.support import ProxyServer

if TYPE_CHECKING:
    from tests.ui.conftest import PageFactory, Screenshots

pytestmark = pytest.mark.browser

PHONE = {"width": 375, "height": 812}
SMALL = {"width": 64, "height": 64, "length": 5, "steps": 2}
PROMPTS = ["a red kite over a beach", "a blue kite over a field", "a green kite over a city"]

FINAL_LOADED = """(id) => {
  const video = document.querySelector(
    `[data-batch-id="${id}"] video[data-testid=batch-final-video]`);
  return video !== null && video.readyState >= 1 && video.duration > 0;
}"""

NO_OVERFLOW = """() => ({
  scroll: document.documentElement.scrollWidth,
  client: document.documentElement.clientWidth,
  widest: Math.max(...[...document.querySelectorAll("body *")]
    .filter((e) => e.getClientRects().length)
    .map((e) => e.getBoundingClientRect().right)),
})"""


def batch_row(page: Page, batch_id: str) -> Locator:
    return page.locator(f'[data-testid=batch][data-batch-id="{batch_id}"]')


async def test_a_batch_of_three_completes_and_downloads_as_a_zip(
    open_page: PageFactory, server: ProxyServer, shots: Screenshots
):
    page = await open_page()
    await page.get_by_test_id("tab-batches").click()
    await expect(page.get_by_test_id("view-batches")).to_be_visible()
    await expect(page.get_by_test_id("view-jobs")).to_be_hidden()
    await expect(page.get_by_test_id("batches-empty")).to_be_visible()

    # A batch made elsewhere arrives through the event stream.
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
        made = await client.post("/api/video/batch_inference", json={"prompts": PROMPTS, **SMALL})
    assert made.status_code == 200, made.text
    batch_id = made.json()["batch_id"]
    batch = batch_row(page, batch_id)
    await expect(batch).to_be_visible()
    await expect(batch.get_by_test_id("batch-kind")).to_have_text("Batch")
    await expect(batch.get_by_test_id("batch-title")).to_have_text("3 prompts")
    await expect(page.get_by_test_id("batch-count")).to_have_text("1")

    await batch.get_by_test_id("batch-toggle").click()
    await expect(batch.get_by_test_id("batch-toggle")).to_have_attribute("aria-expanded", "true")
    jobs = batch.get_by_test_id("batch-job")
    await expect(jobs).to_have_count(3)
    await expect(jobs.get_by_test_id("job-prompt")).to_have_text(PROMPTS)
    await shots.take(page, "expanded")

    await expect(batch).to_have_attribute("data-status", "completed", timeout=30_000)
    await expect(batch.get_by_test_id("batch-status")).to_have_text("completed")
    await expect(batch.get_by_test_id("batch-counts")).to_have_text("3/3 completed")
    await expect(batch.get_by_test_id("batch-progress")).to_have_attribute("aria-valuenow", "100")
    for index in range(3):
        await expect(jobs.nth(index)).to_have_attribute("data-status", "completed")
        await expect(jobs.nth(index).locator("video")).to_have_count(1)
    zip_link = batch.get_by_test_id("batch-zip")
    await expect(zip_link).to_be_visible()
    href = await zip_link.get_attribute("href")
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
        archive = await client.get(href)
    assert archive.status_code == 200
    assert archive.headers["content-type"] == "application/zip"
    with zipfile.ZipFile(io.BytesIO(archive.content)) as contents:
        assert len(contents.namelist()) == 3
    await shots.take(page, "completed")

    # The same jobs are in the Jobs view, labelled.
    await page.get_by_test_id("tab-jobs").click()
    await expect(page.get_by_test_id("job-card")).to_have_count(3)
    await expect(page.get_by_test_id("job-card").get_by_test_id("job-label")).to_have_text(
        ["prompt 3 of 3", "prompt 2 of 3", "prompt 1 of 3"]
    )
    # The view is remembered.
    await page.get_by_test_id("tab-batches").click()
    await page.reload()
    await page.wait_for_selector("html[data-ready=true]")
    await expect(page.get_by_test_id("tab-batches")).to_have_attribute("aria-selected", "true")
    await batch.get_by_test_id("batch-toggle").click()
    await expect(batch.get_by_test_id("batch-job")).to_have_count(3)

    await page.set_viewport_size(PHONE)
    widths = await page.evaluate(NO_OVERFLOW)
    assert widths["scroll"] <= widths["client"], widths
    assert widths["widest"] <= widths["client"] + 0.5, widths
    await shots.take(page, "phone")

    await batch.get_by_test_id("batch-delete").click()
    await expect(page.get_by_test_id("confirm-title")).to_have_text("Delete this batch?")
    await page.get_by_test_id("confirm-delete").click()
    await expect(batch).to_have_count(0)
    await expect(page.get_by_test_id("batches-empty")).to_be_visible()
    async with httpx.AsyncClient(base_url=server.url) as client:
        assert (await client.get(f"/api/batches/{batch_id}")).status_code == 404


async def test_scenes_generate_play_joined_and_regenerate(
    page: Page, server: ProxyServer, shots: Screenshots
):
    await page.get_by_test_id("tab-batches").click()
    await page.get_by_test_id("scenes-box").locator("summary").click()
    names = page.get_by_test_id("scene-name")
    await expect(names).to_have_count(4)
    for index, name in enumerate(["hook", "problem", "solution", "cta"]):
        await expect(names.nth(index)).to_have_value(name)
    # Keep two scenes: hook and cta.
    await page.get_by_role("button", name="Remove scene 2").click()
    await page.get_by_role("button", name="Remove scene 2").click()
    await expect(names).to_have_count(2)
    await expect(names.nth(1)).to_have_value("cta")
    await page.get_by_label("Scene 1 description").fill("a ball bounces into view")
    for name, value in SMALL.items():
        await page.get_by_test_id(f"scene-param-{name}").fill(str(value))

    # A scene without a description is caught before anything is sent.
    await page.get_by_test_id("scenes-generate").click()
    row_error = page.get_by_test_id("scene-row").nth(1).get_by_test_id("scene-error")
    await expect(row_error).to_have_text("describe what the scene shows")
    await expect(page.get_by_label("Scene 2 description")).to_have_attribute("aria-invalid", "true")
    await shots.take(page, "missing-description")
    await page.get_by_label("Scene 2 description").fill("the ball rests on a table")
    await expect(row_error).to_be_hidden()

    generated = page.expect_response(lambda r: r.url.endswith("/api/videos/generate-scenes"))
    async with generated as answer:
        await page.get_by_test_id("scenes-generate").click()
    response = await answer.value
    assert response.status == 200, await response.text()
    batch_id = (await response.json())["job_id"]
    batch = batch_row(page, batch_id)
    await expect(batch.get_by_test_id("batch-toggle")).to_have_attribute("aria-expanded", "true")
    await expect(batch.get_by_test_id("batch-kind")).to_have_text("Scenes")
    await expect(batch.get_by_test_id("scene-title")).to_have_text(["hook", "cta"])
    await expect(batch.get_by_test_id("batch-title")).to_have_text("hook → cta")
    await shots.take(page, "scenes-started")

    await expect(batch).to_have_attribute("data-status", "completed", timeout=30_000)
    final = batch.get_by_test_id("batch-final")
    await expect(final).to_have_text("Play joined video")
    await final.click()
    await page.wait_for_function(FINAL_LOADED, arg=batch_id, timeout=20_000)
    await expect(final).to_be_hidden()
    await shots.take(page, "joined")

    # Regenerate the hook: a new job takes its place; the joined video is offered again.
    hook = batch.locator('[data-testid=scene][data-scenario="hook"]')
    old_job = await hook.get_by_test_id("batch-job").get_attribute("data-job-id")
    regenerate = hook.get_by_test_id("scene-regenerate")
    await expect(regenerate).to_be_enabled()
    regenerated = page.expect_response(lambda r: r.url.endswith("/api/videos/regenerate-scene"))
    async with regenerated as answer:
        await regenerate.click()
    assert (await answer.value).status == 202
    new_card = hook.locator(f'[data-testid=batch-job]:not([data-job-id="{old_job}"])')
    await expect(new_card).to_have_count(1)
    await expect(hook.get_by_test_id("batch-job")).to_have_count(1)
    await expect(batch.get_by_test_id("batch-final-video")).to_have_count(0)
    await shots.take(page, "regenerating")
    await expect(new_card).to_have_attribute("data-status", "completed", timeout=30_000)
    await expect(batch).to_have_attribute("data-status", "completed")
    await final.click()
    await page.wait_for_function(FINAL_LOADED, arg=batch_id, timeout=20_000)
    src = await batch.get_by_test_id("batch-final-video").get_attribute("src")
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
        joined = await client.get(src)
        status = (await client.get(f"/api/videos/status/{batch_id}")).json()
    assert joined.status_code == 200 and joined.headers["content-type"] == "video/mp4"
    assert [s["scenario"] for s in status["scenes"]] == ["hook", "cta"]
    assert status["scenes"][0]["job_id"] != old_job
    await shots.take(page, "regenerated")
