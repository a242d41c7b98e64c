"""The prompt tools in the web UI, against a scripted OpenAI-compatible model on a loopback
port (tests/prompts/fake_llm.py) and the proxy in front of the stand-in ComfyUI.

Each model call takes the next scripted answer, so every test adds exactly the answers its
clicks use. Nothing sleeps: every wait is Playwright's `expect` with a timeout.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest
from playwright.async_api import Page, expect

from proxy.settings import Settings
from tests.prompts.fake_llm import FakeLLM, raw, reply
from tests.support import ProxyServer, StandinProcess, proxy_server

if TYPE_CHECKING:
    from tests.ui.conftest import Screenshots

pytestmark = pytest.mark.browser

MODEL = "ui-test-model"
SMALL = {"width": "64", "height": "64", "length": "5", "steps": "2"}

ROUGH = "cats playing"
ENHANCED = (
    "Two fluffy tabby kittens chase a red yarn ball across a sunlit wooden floor, "
    "low tracking shot, soft morning light"
)
SUNSET = "A colorful sunset over the ocean"
SUNSET_PARAMS = {"time_of_day": "sunset", "scene": "ocean", "colors": ["orange", "red", "purple"]}
STORMY = "A dramatic sunset over a stormy ocean, dark clouds gathering on the horizon"
STORMY_PARAMS = {**SUNSET_PARAMS, "weather": "stormy"}
CHANGES = ["Added stormy weather", "Darkened the sky with clouds"]
VARIATIONS = [
    "A sunset over the sea seen from a cliff, gulls in the wind",
    "A stormy dusk over a harbour, boats rocking at their moorings",
    "A calm violet twilight over the ocean, a lighthouse blinking",
]


@pytest.fixture
def llm_configured() -> bool:
    """Parametrize with False for a proxy without a language model."""
    return True


@pytest.fixture
async def fake_llm() -> AsyncIterator[FakeLLM]:
    server = FakeLLM()
    await server.start()
    yield server
    await server.close()


@pytest.fixture
async def server(
    standin: StandinProcess, tmp_path: Path, fake_llm: FakeLLM, llm_configured: bool
) -> AsyncIterator[ProxyServer]:
    """The conftest's proxy, with the fake model configured (unless told otherwise)."""
    llm: dict[str, Any] = (
        {"llm_base_url": fake_llm.base_url, "llm_model": MODEL, "llm_timeout_s": 10.0}
        if llm_configured
        else {}
    )
    settings = Settings(data_dir=tmp_path / "data", comfyui_urls=[standin.url], standin=True, **llm)
    async with proxy_server(settings) as proxy:
        yield proxy


async def initialize(page: Page, fake_llm: FakeLLM, prompt: str = SUNSET) -> None:
    await page.get_by_label("Prompt", exact=True).fill(prompt)
    fake_llm.add(reply({"parameters": SUNSET_PARAMS}))
    await page.get_by_test_id("tools-initialize").click()
    await expect(page.get_by_test_id("tools-param")).to_have_count(len(SUNSET_PARAMS))


async def update(page: Page, fake_llm: FakeLLM) -> None:
    fake_llm.add(reply({"parameters": STORMY_PARAMS, "prompt": STORMY, "changes": CHANGES}))
    await page.get_by_label("Ask for a change").fill("Make it more dramatic with stormy clouds")
    await page.get_by_test_id("tools-update").click()
    await expect(page.get_by_test_id("tools-result-prompt")).to_have_text(STORMY)


async def test_enhance_replaces_the_prompt_and_can_be_undone(
    page: Page, fake_llm: FakeLLM, shots: Screenshots
):
    prompt = page.get_by_label("Prompt", exact=True)
    await expect(page.get_by_test_id("prompt-tools")).to_be_visible()
    await expect(page.get_by_test_id("tools-model")).to_contain_text(MODEL)
    await expect(page.get_by_test_id("tools-unavailable")).to_be_hidden()
    await prompt.fill(ROUGH)
    await shots.take(page, "rough")

    fake_llm.add(reply({"enhanced_prompt": ENHANCED}))
    await page.get_by_test_id("enhance").click()
    await expect(prompt).to_have_value(ENHANCED)
    await expect(page.get_by_test_id("enhance-status")).to_have_text("Prompt enhanced.")
    assert ROUGH in fake_llm.received[-1].text
    await shots.take(page, "enhanced")

    await page.get_by_test_id("enhance-undo").click()
    await expect(prompt).to_have_value(ROUGH)
    await expect(page.get_by_test_id("enhance-undo")).to_be_hidden()

    # The model fails: its error sits under the button; the prompt stays as it was.
    fake_llm.add(raw(500, {"error": {"message": "model overloaded"}}))
    await page.get_by_test_id("enhance").click()
    error = page.get_by_test_id("enhance-error")
    await expect(error).to_be_visible()
    await expect(error).to_contain_text("Could not enhance the prompt")
    await expect(error).to_contain_text("HTTP 500")
    await expect(prompt).to_have_value(ROUGH)
    await expect(page.get_by_test_id("enhance")).to_be_enabled()
    await shots.take(page, "model-error")

    # A later success clears the error.
    fake_llm.add(reply({"enhanced_prompt": ENHANCED}))
    await page.get_by_test_id("enhance").click()
    await expect(prompt).to_have_value(ENHANCED)
    await expect(error).to_be_hidden()


async def test_parameters_update_and_history(page: Page, fake_llm: FakeLLM, shots: Screenshots):
    prompt = page.get_by_label("Prompt", exact=True)
    await expect(page.get_by_test_id("history-empty")).to_be_visible()
    await expect(page.get_by_test_id("tools-update")).to_be_disabled()

    await initialize(page, fake_llm)
    params = page.get_by_test_id("tools-parameters")
    await expect(params.locator("[data-key=time_of_day] dd")).to_have_text("sunset")
    await expect(params.locator("[data-key=colors] dd")).to_have_text("orange, red, purple")
    await expect(page.get_by_test_id("history-entry")).to_have_count(1)
    assert SUNSET in fake_llm.received[-1].text
    await shots.take(page, "parameters")

    await update(page, fake_llm)
    changes = page.get_by_test_id("tools-changes").locator("li")
    await expect(changes).to_have_text(CHANGES)
    await expect(params.locator("[data-key=weather] dd")).to_have_text("stormy")
    entries = page.get_by_test_id("history-entry")
    await expect(entries).to_have_count(2)
    await expect(entries.nth(1)).to_contain_text(STORMY)
    await shots.take(page, "updated")

    await page.get_by_test_id("tools-use-result").click()
    await expect(prompt).to_have_value(STORMY)
    await entries.nth(0).get_by_test_id("history-use").click()
    await expect(prompt).to_have_value(SUNSET)
    await expect(page.get_by_test_id("form-status")).to_contain_text("Prompt 1 of the history")

    # An update the model botches twice: the error stays by the update box.
    fake_llm.add(reply({"nonsense": True}), reply({"nonsense": True}))
    await page.get_by_label("Ask for a change").fill("Add a lighthouse")
    await page.get_by_test_id("tools-update").click()
    update_error = page.get_by_test_id("tools-update-error")
    await expect(update_error).to_contain_text("Could not rewrite the prompt")
    await expect(params.locator("[data-key=weather] dd")).to_have_text("stormy")
    await shots.take(page, "update-error")

    # The session is the browser's cookie: a reload finds the same history and parameters.
    await page.reload()
    await page.wait_for_selector("html[data-tools=on]")
    await expect(page.get_by_test_id("history-entry")).to_have_count(2)
    await expect(params.locator("[data-key=weather] dd")).to_have_text("stormy")
    await expect(page.get_by_test_id("tools-update")).to_be_enabled()


async def test_variations_sent_as_a_batch(
    page: Page, fake_llm: FakeLLM, server: ProxyServer, shots: Screenshots
):
    for name, value in SMALL.items():
        await page.get_by_test_id(f"param-{name}").fill(value)
    await initialize(page, fake_llm)
    await update(page, fake_llm)
    generate = page.get_by_test_id("variations-generate")
    await expect(generate).to_be_disabled()
    entries = page.get_by_test_id("history-entry")
    await entries.nth(0).get_by_test_id("history-pick").check()
    await entries.nth(1).get_by_test_id("history-pick").check()
    await page.get_by_label("How many").fill("3")
    fake_llm.add(reply({"prompts": VARIATIONS}))
    await generate.click()
    variations = page.get_by_test_id("variation")
    await expect(variations).to_have_count(3)
    shown = fake_llm.received[-1].text
    assert SUNSET in shown and STORMY in shown

    send = page.get_by_test_id("variations-send")
    await expect(send).to_be_disabled()
    await variations.nth(0).get_by_test_id("variation-pick").check()
    await variations.nth(2).get_by_test_id("variation-pick").check()
    await expect(send).to_have_text("Send as batch (2)")
    await shots.take(page, "variations")

    async with page.expect_response(
        lambda r: r.url.endswith("/api/video/batch_inference")
    ) as answer:
        await send.click()
    response = await answer.value
    assert response.status == 200, await response.text()
    batch_id = (await response.json())["batch_id"]
    sent = response.request.post_data_json
    assert sent == {
        "prompts": [VARIATIONS[0], VARIATIONS[2]],
        "width": 64,
        "height": 64,
        "length": 5,
        "steps": 2,
    }

    # The Batches view opens on the new batch, expanded, its jobs in prompt order.
    await expect(page.get_by_test_id("tab-batches")).to_have_attribute("aria-selected", "true")
    batch = page.locator(f'[data-testid=batch][data-batch-id="{batch_id}"]')
    await expect(batch.get_by_test_id("batch-toggle")).to_have_attribute("aria-expanded", "true")
    jobs = batch.get_by_test_id("batch-job")
    await expect(jobs).to_have_count(2)
    await expect(jobs.get_by_test_id("job-prompt")).to_have_text([VARIATIONS[0], VARIATIONS[2]])
    await expect(jobs.get_by_test_id("job-label")).to_have_text(["prompt 1 of 2", "prompt 2 of 2"])
    await expect(batch.get_by_test_id("batch-kind")).to_have_text("Batch")
    await shots.take(page, "batch-sent")
    await expect(batch).to_have_attribute("data-status", "completed", timeout=30_000)
    await expect(batch.get_by_test_id("batch-counts")).to_have_text("2/2 completed")
    await expect(batch.get_by_test_id("batch-zip")).to_be_visible()
    await shots.take(page, "batch-completed")


async def test_scene_descriptions_drafted_from_a_brief(
    page: Page, fake_llm: FakeLLM, shots: Screenshots
):
    await page.get_by_test_id("tab-batches").click()
    await page.get_by_test_id("scenes-box").locator("summary").click()
    await expect(page.get_by_test_id("scene-draft-box")).to_be_visible()
    drafts = {
        "hook": "A hand reaches for a dented plastic bottle on a desk",
        "problem": "The bottle leaks water over a stack of papers",
        "solution": "A steel bottle clicks shut, drops of water bead on its side",
        "cta": "The steel bottle stands on the desk beside a logo, warm light",
    }
    fake_llm.add(reply({"scenes": [{"scenario": k, "description": v} for k, v in drafts.items()]}))
    await page.get_by_label("Draft the descriptions from a brief").fill("An ad for a steel bottle")
    await page.get_by_test_id("scene-draft").click()
    descriptions = page.get_by_test_id("scene-description")
    await expect(descriptions).to_have_count(4)
    for index, text in enumerate(drafts.values()):
        await expect(descriptions.nth(index)).to_have_value(text)
    assert "An ad for a steel bottle" in fake_llm.received[-1].text
    await shots.take(page, "drafted")


@pytest.mark.parametrize("llm_configured", [False])
async def test_without_a_model_the_tools_are_hidden_and_say_why(
    page: Page, server: ProxyServer, shots: Screenshots
):
    async with httpx.AsyncClient(base_url=server.url) as client:
        status = (await client.get("/api/prompt-tools/status")).json()
    assert status["configured"] is False

    await page.wait_for_selector("html[data-tools=off]")
    note = page.get_by_test_id("tools-unavailable")
    await expect(note).to_be_visible()
    first_sentence = status["message"].split(". ")[0]
    await expect(note.locator("summary")).to_contain_text(first_sentence)
    await expect(note).to_contain_text("LLM_BASE_URL")
    await expect(page.get_by_test_id("prompt-tools")).to_be_hidden()
    await expect(page.get_by_test_id("enhance")).to_have_count(0)
    await page.get_by_test_id("tab-batches").click()
    await page.get_by_test_id("scenes-box").locator("summary").click()
    await expect(page.get_by_test_id("scene-draft-box")).to_be_hidden()
    await shots.take(page, "no-model")

    # Nothing else is affected: the form still creates jobs.
    await page.get_by_test_id("tab-jobs").click()
    await page.get_by_label("Prompt", exact=True).fill("still works without a model")
    async with page.expect_response(lambda r: r.url.endswith("/api/jobs")) as answer:
        await page.get_by_test_id("create-pending").click()
    assert (await answer.value).status == 201
    await expect(page.get_by_test_id("job-card")).to_have_count(1)
