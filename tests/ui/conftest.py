"""Browser tests: Debian's headless Chromium, driven by Playwright's async API in the test's
event loop, against the real proxy in front of the stand-in ComfyUI (a child process).

Playwright's own browser download is not used (it is unavailable here): the tests skip, saying
so, when /usr/bin/chromium is missing. Every test keeps its screenshots under its tmp_path; the
folders are listed at the end of the run.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import Browser, Page, async_playwright

from proxy.settings import Settings
from tests.support import ProxyServer, StandinProcess, proxy_server, standin_process

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
DESKTOP = {"width": 1280, "height": 900}

SHOT_DIRS = pytest.StashKey[list[Path]]()


@dataclass
class Screenshots:
    """Numbered full-page screenshots of one test, in the order they were taken."""

    folder: Path
    taken: list[Path] = field(default_factory=list)

    async def take(self, page: Page, name: str) -> Path:
        path = self.folder / f"{len(self.taken) + 1:02d}-{name}.png"
        await page.screenshot(path=str(path), full_page=True)
        self.taken.append(path)
        return path


@pytest.fixture
def shots(tmp_path: Path, request: pytest.FixtureRequest) -> Screenshots:
    folder = tmp_path / "screenshots"
    folder.mkdir()
    request.config.stash.setdefault(SHOT_DIRS, []).append(folder)
    print(f"screenshots: {folder}")
    return Screenshots(folder)


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    folders = config.stash.get(SHOT_DIRS, [])
    if folders:
        terminalreporter.write_sep("-", "browser test screenshots")
        for folder in folders:
            terminalreporter.write_line(str(folder))


@pytest.fixture
def standin(tmp_path: Path) -> Iterator[StandinProcess]:
    """The stand-in ComfyUI; 0.3 s per sampling step, so progress is visible."""
    with standin_process(tmp_path / "comfy", step_seconds=0.3) as proc:
        yield proc


@pytest.fixture
async def server(standin: StandinProcess, tmp_path: Path) -> AsyncIterator[ProxyServer]:
    settings = Settings(data_dir=tmp_path / "data", comfyui_urls=[standin.url], standin=True)
    async with proxy_server(settings) as proxy:
        yield proxy


@pytest.fixture
def chromium_path() -> Path:
    if not CHROMIUM.exists():
        pytest.skip(
            f"Debian Chromium is not installed at {CHROMIUM} "
            "(apt-get install chromium); Playwright's own browser download is not used"
        )
    return CHROMIUM


@pytest.fixture
async def browser(chromium_path: Path, server: ProxyServer) -> AsyncIterator[Browser]:
    """Chromium, closed before the proxy stops (its event streams must end first)."""
    async with async_playwright() as playwright:
        chromium = await playwright.chromium.launch(
            executable_path=str(chromium_path), headless=True, args=CHROMIUM_ARGS
        )
        try:
            yield chromium
        finally:
            await chromium.close()


PageFactory = Callable[..., Awaitable[Page]]
"""`await open_page(viewport, phone=False, go=True)`: a page in a fresh browser context."""


@pytest.fixture
async def open_page(browser: Browser, server: ProxyServer) -> AsyncIterator[PageFactory]:
    """Open the UI in a fresh browser context; uncaught page errors fail the test."""
    contexts = []
    errors: list[str] = []

    async def open_(
        viewport: dict[str, int] = DESKTOP, *, phone: bool = False, go: bool = True
    ) -> Page:
        options: dict[str, Any] = {"viewport": viewport, "base_url": server.url}
        if phone:
            options.update(is_mobile=True, has_touch=True, device_scale_factor=2)
        context = await browser.new_context(**options)
        contexts.append(context)
        page = await context.new_page()
        page.set_default_timeout(15_000)
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        if go:
            await goto_ui(page)
        return page

    try:
        yield open_
    finally:
        for context in contexts:
            await context.close()
    assert not errors, f"uncaught errors in the page: {errors}"


@pytest.fixture
async def page(open_page: PageFactory) -> Page:
    return await open_page()


async def goto_ui(page: Page) -> None:
    """Load the UI and wait until the form is built from /api/models."""
    await page.goto("/")
    await page.wait_for_selector("html[data-ready=true]")
