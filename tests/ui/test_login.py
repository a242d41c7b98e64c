"""The web UI's login, in headless Chromium against the proxy with API keys configured.

The page asks /api/auth/me at start; with keys and no session it shows only the login panel
and calls nothing else. A key exchanged at /api/auth/login gives an HttpOnly session cookie;
the page keeps nothing of the key. A 401 later (the session ended) brings the panel back;
logging out ends the session. A page of another origin cannot make the browser act with the
cookie: on 127.0.0.1 with another port it is the same *site*, so SameSite=Strict lets the
cookie through and the server's Origin / Sec-Fetch-Site check is what refuses the request.

Nothing sleeps: every wait is Playwright's `expect`, `expect_response` or `wait_for_*` with a
timeout.
"""

from __future__ import annotations

import html
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest
from aiohttp import web
from playwright.async_api import Locator, Page, expect

from proxy.settings import Settings
from tests.support import ProxyServer, StandinProcess, bound_socket, proxy_server

if TYPE_CHECKING:
    from tests.ui.conftest import PageFactory, Screenshots

pytestmark = pytest.mark.browser

USER, USER_KEY = "alice", "alice-key-7f3a91c2"
ADMIN, ADMIN_KEY = "ops", "ops-key-2b8e44d0"
SESSION_COOKIE = "fastwan_session"

# Small videos so the stand-in is quick; 4 steps at 0.3 s still show the job running.
SMALL = {"width": "64", "height": "64", "length": "9", "steps": "4"}
# A job that stays running for the whole test (100 steps at 0.3 s).
LONG_JOB = {
    "prompt": "a very long pan",
    "width": 64,
    "height": 64,
    "num_frames": 9,
    "num_inference_steps": 100,
}

PHONE = {"width": 375, "height": 812}
# The page's width when nothing sticks out past the viewport (else the widest overhang).
WIDTHS = """() => Math.max(
  document.documentElement.scrollWidth,
  ...[...document.querySelectorAll("body *")]
    .filter((e) => e.getClientRects().length)
    .map((e) => Math.ceil(e.getBoundingClientRect().right - 0.5)),
)"""

STATUS_OF = """async ([path, method]) => (await fetch(path, {method, cache: "no-store"})).status"""


@pytest.fixture
def api_keys() -> tuple[list[str], list[str]]:
    """(user keys, admin keys); parametrize with ([], []) for a proxy without keys."""
    return [f"{USER}:{USER_KEY}"], [f"{ADMIN}:{ADMIN_KEY}"]


@pytest.fixture
async def server(
    standin: StandinProcess, tmp_path: Path, api_keys: tuple[list[str], list[str]]
) -> AsyncIterator[ProxyServer]:
    """The conftest's proxy, with API keys configured (unless told otherwise)."""
    users, admins = api_keys
    settings = Settings(
        data_dir=tmp_path / "data",
        comfyui_urls=[standin.url],
        standin=True,
        api_keys=users,
        admin_api_keys=admins,
    )
    async with proxy_server(settings) as proxy:
        yield proxy


def client(server: ProxyServer, key: str | None = USER_KEY) -> httpx.AsyncClient:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return httpx.AsyncClient(base_url=server.url, headers=headers, timeout=30)


def card(page: Page, job_id: str) -> Locator:
    return page.locator(f'[data-testid=job-card][data-job-id="{job_id}"]')


async def open_login(open_page: PageFactory) -> tuple[Page, list[str]]:
    """A fresh page at the login panel, and the path of every API call it makes."""
    page = await open_page(go=False)
    calls: list[str] = []
    page.on(
        "request",
        lambda r: calls.append(r.url.split("/", 3)[-1]) if "/api/" in r.url else None,
    )
    await page.goto("/")
    await expect(page.locator("html")).to_have_attribute("data-auth", "login")
    await expect(page.get_by_test_id("login-panel")).to_be_visible()
    return page, calls


async def log_in(page: Page, key: str) -> int:
    """Type a key and press Log in; the status of the login call."""
    await page.get_by_test_id("login-key").fill(key)
    async with page.expect_response(lambda r: r.url.endswith("/api/auth/login")) as answer:
        await page.get_by_test_id("login-submit").click()
    return (await answer.value).status


async def logged_in(page: Page, key: str) -> None:
    assert await log_in(page, key) == 200
    await page.wait_for_selector("html[data-ready=true]")
    await expect(page.locator("html")).to_have_attribute("data-auth", "in")


async def create(page: Page, prompt: str) -> dict[str, Any]:
    await page.get_by_label("Prompt", exact=True).fill(prompt)
    for name, value in SMALL.items():
        await page.get_by_test_id(f"param-{name}").fill(value)
    async with page.expect_response(
        lambda r: r.url.endswith("/api/jobs") and r.request.method == "POST"
    ) as answer:
        await page.get_by_test_id("create").click()
    response = await answer.value
    assert response.status == 201, await response.text()
    return await response.json()


async def test_login_create_watch_and_log_out(
    open_page: PageFactory, server: ProxyServer, shots: Screenshots
):
    page, calls = await open_login(open_page)
    key_input = page.get_by_test_id("login-key")
    await expect(key_input).to_have_attribute("type", "password")
    await expect(key_input).to_have_attribute("autocomplete", "off")
    await expect(key_input).to_be_focused()
    # Only the login shows: nothing of the app, nothing asked of the server but who we are.
    await expect(page.get_by_test_id("job-form")).to_be_hidden()
    await expect(page.get_by_test_id("feed-status")).to_be_hidden()
    await expect(page.get_by_test_id("auth-user")).to_be_hidden()
    assert await page.locator("html").get_attribute("data-ready") is None
    assert calls == ["api/auth/me"], calls
    await shots.take(page, "login")

    # A wrong key: the error, and still the login.
    assert await log_in(page, "not-a-key") == 401
    error = page.get_by_test_id("login-error")
    await expect(error).to_be_visible()
    await expect(error).to_contain_text("Unknown API key")
    await expect(page.get_by_test_id("login-panel")).to_be_visible()
    await expect(page.get_by_test_id("job-form")).to_be_hidden()
    await shots.take(page, "wrong-key")

    # The right one: the app, and who is logged in.
    await logged_in(page, USER_KEY)
    await expect(page.get_by_test_id("login-panel")).to_be_hidden()
    await expect(page.get_by_test_id("job-form")).to_be_visible()
    user = page.get_by_test_id("auth-user")
    await expect(user).to_have_text(USER)
    await expect(page.get_by_test_id("logout")).to_be_visible()
    await expect(page.get_by_test_id("feed-status")).to_have_attribute("data-state", "live")
    await expect(page.get_by_test_id("backend-status")).to_have_attribute("data-state", "up")
    await expect(key_input).to_have_value("")
    # The key is nowhere in the page's reach; the session cookie is HttpOnly.
    kept = await page.evaluate(
        """() => JSON.stringify([{...localStorage}, {...sessionStorage}, document.cookie])"""
    )
    assert USER_KEY not in kept and SESSION_COOKIE not in kept, kept
    cookies = {c["name"]: c for c in await page.context.cookies()}
    assert cookies[SESSION_COOKIE]["httpOnly"] and cookies[SESSION_COOKIE]["sameSite"] == "Strict"

    # A job from the form, followed live to the end on the event stream (the cookie's).
    job = await create(page, "a lantern drifting down a river")
    item = card(page, job["id"])
    await expect(item).to_be_visible()
    await expect(item).to_have_attribute("data-status", "completed", timeout=30_000)
    await expect(item.get_by_test_id("job-status")).to_have_text("completed")
    await shots.take(page, "completed")
    async with client(server) as alice, client(server, None) as nobody:
        assert (await alice.get(f"/api/jobs/{job['id']}")).json()["status"] == "completed"
        assert (await nobody.get(f"/api/jobs/{job['id']}")).status_code == 401

    # Log out: the login again, the page emptied, and the session over.
    await page.get_by_test_id("logout").click()
    await expect(page.get_by_test_id("login-panel")).to_be_visible()
    await expect(page.get_by_test_id("login-notice")).to_have_text("You have logged out.")
    await expect(page.get_by_test_id("auth-user")).to_be_hidden()
    await expect(page.get_by_test_id("job-card")).to_have_count(0)
    assert await page.evaluate(STATUS_OF, ["/api/jobs", "GET"]) == 401
    assert SESSION_COOKIE not in {c["name"] for c in await page.context.cookies()}
    await shots.take(page, "logged-out")


async def test_a_session_that_ends_brings_the_login_back(
    open_page: PageFactory, server: ProxyServer, shots: Screenshots
):
    page, _ = await open_login(open_page)
    await logged_in(page, USER_KEY)
    prompt = page.get_by_label("Prompt", exact=True)
    await prompt.fill("typed before the session ended")
    # Stays set unless the page reloads.
    await page.evaluate("() => { window.sameDocument = true; }")

    # The session ends (expired, or its key rotated): the next call answers 401.
    await page.context.clear_cookies()
    await page.context.add_cookies(
        [{"name": SESSION_COOKIE, "value": f"{USER}.1.0000", "url": server.url}]
    )
    async with page.expect_response(lambda r: "/api/jobs?" in r.url) as answer:
        await page.get_by_test_id("refresh-jobs").click()
    assert (await answer.value).status == 401
    notice = page.get_by_test_id("login-notice")
    await expect(page.get_by_test_id("login-panel")).to_be_visible()
    await expect(notice).to_contain_text(f"Your session as {USER} has ended")
    await expect(page.get_by_test_id("job-form")).to_be_hidden()
    assert await page.locator("html").get_attribute("data-ready") is None
    await shots.take(page, "session-ended")

    # The same user again: the page carries on where it was, live again.
    await logged_in(page, USER_KEY)
    assert await page.evaluate("() => window.sameDocument === true")
    await expect(prompt).to_have_value("typed before the session ended")
    await expect(page.get_by_test_id("feed-status")).to_have_attribute("data-state", "live")
    await expect(page.get_by_test_id("list-error")).to_be_hidden()

    # Ended again, and someone else logs in: a clean page, as the admin.
    await page.context.clear_cookies()
    await page.get_by_test_id("refresh-jobs").click()
    await expect(page.get_by_test_id("login-panel")).to_be_visible()
    async with page.expect_navigation():
        assert await log_in(page, ADMIN_KEY) == 200
    await page.wait_for_selector("html[data-ready=true]")
    assert not await page.evaluate("() => window.sameDocument === true")
    await expect(page.get_by_test_id("auth-user")).to_have_text(f"{ADMIN} admin")
    await shots.take(page, "admin")


@asynccontextmanager
async def other_origin(pages: dict[str, str]) -> AsyncIterator[int]:
    """A plain web server on another loopback port serving `pages` (path → HTML); its port."""

    def handler(body: str) -> Any:
        async def serve(_request: web.Request) -> web.Response:
            return web.Response(text=body, content_type="text/html")

        return serve

    app = web.Application()
    for path, body in pages.items():
        app.router.add_get(path, handler(body))
    runner = web.AppRunner(app)
    await runner.setup()
    sock = bound_socket()
    try:
        await web.SockSite(runner, sock).start()
        yield sock.getsockname()[1]
    finally:
        await runner.cleanup()
        sock.close()


def attack_pages(target: str) -> dict[str, str]:
    quoted = html.escape(target, quote=True)
    return {
        # A form posted cross-origin: a top-level navigation, which SameSite=Strict would let
        # through from the same site.
        "/form": (
            f'<!doctype html><form method="post" action="{quoted}"></form>'
            "<script>document.forms[0].submit()</script>"
        ),
        # A no-cors fetch with credentials: the answer is opaque, but the request is sent.
        "/fetch": (
            "<!doctype html><p>hello</p><script>"
            f'fetch("{quoted}", {{method: "POST", credentials: "include", mode: "no-cors"}})'
            "</script>"
        ),
    }


async def test_another_origin_cannot_use_the_session(
    open_page: PageFactory, server: ProxyServer, shots: Screenshots
):
    page, _ = await open_login(open_page)
    await logged_in(page, USER_KEY)
    async with client(server) as alice:
        made = await alice.post("/api/jobs", json=LONG_JOB)
        assert made.status_code == 201, made.text
        job = made.json()
    item = card(page, job["id"])
    await expect(item).to_have_attribute("data-status", "running", timeout=20_000)
    stop_url = f"{server.url}/api/jobs/{job['id']}/stop"

    async with other_origin(attack_pages(stop_url)) as port:
        # 127.0.0.1 on another port: another origin of the same site, so the browser sends the
        # SameSite=Strict cookie; the server must refuse it for coming from elsewhere.
        # localhost: another site, so no cookie at all.
        for origin, refused in (
            (f"http://127.0.0.1:{port}", 403),
            (f"http://localhost:{port}", 401),
        ):
            for path in ("/form", "/fetch"):
                attacker = await page.context.new_page()
                async with attacker.expect_response(lambda r: r.url == stop_url) as answer:
                    await attacker.goto(origin + path)
                response = await answer.value
                where = f"{origin}{path}"
                assert response.request.method == "POST", where
                # 403, not 401: the session came along and was refused for its origin.
                assert response.status == refused, (where, response.status, await response.text())
                if path == "/form":
                    # A navigation's headers are all reported (a fetch's only in part).
                    headers = await response.request.all_headers()
                    assert headers.get("origin") == origin, (where, headers)
                    sent = f"{SESSION_COOKIE}=" in headers.get("cookie", "")
                    # The same site's page sends the cookie; only the server stands in the way.
                    assert sent == (refused == 403), (where, headers)
                await shots.take(attacker, f"{origin.split('//')[1].split(':')[0]}{path[1:]}")
                await attacker.close()

    async with client(server) as alice:
        assert (await alice.get(f"/api/jobs/{job['id']}")).json()["status"] == "running"
        # The page's own session still works, and the stop itself would have worked.
        await expect(item).to_have_attribute("data-status", "running")
        await item.get_by_test_id("job-stop").click()
        await expect(item).to_have_attribute("data-status", "stopped")
        assert (await alice.get(f"/api/jobs/{job['id']}")).json()["status"] == "stopped"


async def test_phone_width_login_and_header(
    open_page: PageFactory, server: ProxyServer, shots: Screenshots
):
    page = await open_page(PHONE, phone=True, go=False)
    await page.goto("/")
    await expect(page.get_by_test_id("login-panel")).to_be_visible()
    assert await page.evaluate(WIDTHS) == PHONE["width"]
    await shots.take(page, "phone-login")
    await logged_in(page, ADMIN_KEY)
    await expect(page.get_by_test_id("auth-user")).to_have_text(f"{ADMIN} admin")
    await expect(page.get_by_test_id("logout")).to_be_visible()
    assert await page.evaluate(WIDTHS) == PHONE["width"]
    await shots.take(page, "phone-app")


@pytest.mark.parametrize("api_keys", [([], [])])
async def test_without_keys_there_is_no_login(
    open_page: PageFactory, server: ProxyServer, shots: Screenshots
):
    page = await open_page()
    await expect(page.locator("html")).to_have_attribute("data-auth", "open")
    await expect(page.get_by_test_id("login-panel")).to_be_hidden()
    await expect(page.get_by_test_id("auth-box")).to_be_hidden()
    await expect(page.get_by_test_id("job-form")).to_be_visible()
    await expect(page.get_by_test_id("feed-status")).to_have_attribute("data-state", "live")
    job = await create(page, "no keys, no login")
    await expect(card(page, job["id"])).to_have_attribute(
        "data-status", "completed", timeout=30_000
    )
    await shots.take(page, "open")
