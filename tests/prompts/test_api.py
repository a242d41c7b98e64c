from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from proxy.api.auth import authenticate
from proxy.api.deps import get_prompt_tools
from proxy.api.errors import install_error_handlers
from proxy.api.prompts import router
from proxy.auth import ANONYMOUS
from proxy.db import Database
from proxy.prompts import PromptTools
from proxy.prompts.service import DEFAULT_SCENARIOS
from proxy.settings import Settings

from .conftest import MODEL, api_client, build_app
from .fake_llm import FakeLLM, reply

SUNSET = "A colorful sunset over the ocean"
SUNSET_PARAMS = {"time_of_day": "sunset", "scene": "ocean", "colors": ["orange", "red", "purple"]}
STORMY = "A dramatic sunset over a stormy ocean, dark clouds gathering on the horizon"
STORMY_PARAMS = {**SUNSET_PARAMS, "weather": "stormy", "sky": "dark clouds"}


def stormy_update(summary: str | None = "Added storm") -> dict[str, Any]:
    answer: dict[str, Any] = {
        "parameters": STORMY_PARAMS,
        "prompt": STORMY,
        "changes": ["Added stormy weather", "Darkened the sky with clouds"],
    }
    if summary is not None:
        answer["summary"] = summary
    return answer


async def initialize(
    client: httpx.AsyncClient, fake_llm: FakeLLM, prompt: str = SUNSET, **kwargs: Any
) -> httpx.Response:
    fake_llm.add(reply({"parameters": SUNSET_PARAMS}))
    return await client.post("/api/initialize", json={"prompt": prompt}, **kwargs)


# --- the seed's endpoints -------------------------------------------------------------------


async def test_initialize(client: httpx.AsyncClient, fake_llm: FakeLLM) -> None:
    response = await initialize(client, fake_llm)
    assert response.status_code == 200, response.text
    assert response.json() == {"parameters": SUNSET_PARAMS, "prompt": SUNSET, "changes": []}
    [request] = fake_llm.received
    assert request.body["model"] == MODEL
    assert request.messages[0]["role"] == "system"
    assert SUNSET in request.messages[-1]["content"]

    history = (await client.get("/api/history")).json()
    assert history == {
        "history": [
            {"prompt": SUNSET, "parameters": SUNSET_PARAMS, "description": "Initial prompt"}
        ]
    }
    assert (await client.get("/api/parameters")).json() == SUNSET_PARAMS


async def test_update(client: httpx.AsyncClient, fake_llm: FakeLLM) -> None:
    await initialize(client, fake_llm)
    fake_llm.add(reply(stormy_update()))
    response = await client.post(
        "/api/update", json={"user_request": "Make it more dramatic with stormy clouds"}
    )
    assert response.status_code == 200, response.text
    assert response.json() == {
        "parameters": STORMY_PARAMS,
        "prompt": STORMY,
        "changes": ["Added stormy weather", "Darkened the sky with clouds"],
    }
    shown = fake_llm.received[-1].messages[-1]["content"]
    assert SUNSET in shown and "stormy clouds" in shown and '"time_of_day": "sunset"' in shown

    history = (await client.get("/api/history")).json()["history"]
    assert [h["description"] for h in history] == ["Initial prompt", "Added storm"]
    assert history[1] == {
        "prompt": STORMY,
        "parameters": STORMY_PARAMS,
        "description": "Added storm",
    }
    assert (await client.get("/api/parameters")).json() == STORMY_PARAMS


async def test_update_without_summary_describes_the_changes(
    client: httpx.AsyncClient, fake_llm: FakeLLM
) -> None:
    await initialize(client, fake_llm)
    fake_llm.add(reply(stormy_update(summary=None)))
    await client.post("/api/update", json={"user_request": "storm"})
    history = (await client.get("/api/history")).json()["history"]
    assert history[1]["description"] == "Added stormy weather; Darkened the sky with clouds"


async def test_update_before_initialize_is_409(
    client: httpx.AsyncClient, fake_llm: FakeLLM
) -> None:
    response = await client.post("/api/update", json={"user_request": "more drama"})
    assert response.status_code == 409
    assert "/api/initialize" in response.json()["error"]
    assert fake_llm.received == []


async def test_enhance(client: httpx.AsyncClient, fake_llm: FakeLLM) -> None:
    enhanced = (
        "Two fluffy tabby kittens chase a red yarn ball across a sunlit wooden floor, "
        "low tracking shot, soft morning light, photorealistic"
    )
    fake_llm.add(reply({"enhanced_prompt": enhanced}, fenced=True))
    response = await client.post("/api/enhance", json={"rough_prompt": "cats playing"})
    assert response.status_code == 200, response.text
    assert response.json() == {"original_prompt": "cats playing", "enhanced_prompt": enhanced}
    assert "cats playing" in fake_llm.received[0].messages[-1]["content"]
    assert (await client.get("/api/history")).json() == {"history": []}


async def test_enhance_too_long_twice_is_502(client: httpx.AsyncClient, fake_llm: FakeLLM) -> None:
    rambling = " ".join(["word"] * 400)
    fake_llm.add(reply({"enhanced_prompt": rambling}), reply({"enhanced_prompt": rambling}))
    response = await client.post("/api/enhance", json={"rough_prompt": "cats"})
    assert response.status_code == 502
    assert "400 words" in fake_llm.received[1].messages[-1]["content"]
    body = response.json()
    assert "word word" in body["error"] and body["detail"] == body["error"]


async def test_generate_variations(client: httpx.AsyncClient, fake_llm: FakeLLM) -> None:
    await initialize(client, fake_llm)
    fake_llm.add(reply(stormy_update()))
    await client.post("/api/update", json={"user_request": "storm"})
    variations = [f"Variation {n}: a sunset over the sea, seen from a cliff" for n in range(3)]
    fake_llm.add(reply({"prompts": variations}))
    response = await client.post(
        "/api/generate-variations", json={"selected_indices": [0, 1], "total_count": 3}
    )
    assert response.status_code == 200, response.text
    assert response.json() == {"prompts": variations, "selected_indices": [0, 1]}
    shown = fake_llm.received[-1].messages[-1]["content"]
    assert SUNSET in shown and STORMY in shown and "3 new prompts" in shown


async def test_variations_too_few_then_enough(client: httpx.AsyncClient, fake_llm: FakeLLM) -> None:
    await initialize(client, fake_llm)
    fake_llm.add(reply({"prompts": ["only one"]}), reply({"prompts": ["a", "b", "c", "d"]}))
    response = await client.post(
        "/api/generate-variations", json={"selected_indices": [0], "total_count": 3}
    )
    assert response.json()["prompts"] == ["a", "b", "c"]
    assert "exactly 3 are needed" in fake_llm.received[-1].messages[-1]["content"]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"selected_indices": [0, 5], "total_count": 2}, "selected_indices"),
        ({"selected_indices": [-1], "total_count": 2}, "selected_indices.0"),
        ({"selected_indices": [], "total_count": 2}, "selected_indices"),
        ({"selected_indices": [0], "total_count": 0}, "total_count"),
    ],
)
async def test_variations_bad_input_is_422_naming_the_field(
    client: httpx.AsyncClient, fake_llm: FakeLLM, body: dict, field: str
) -> None:
    await initialize(client, fake_llm)
    response = await client.post("/api/generate-variations", json=body)
    assert response.status_code == 422
    assert response.json()["field"] == field
    assert len(fake_llm.received) == 1  # only the initialize call


async def test_variations_on_empty_history(client: httpx.AsyncClient, fake_llm: FakeLLM) -> None:
    response = await client.post(
        "/api/generate-variations", json={"selected_indices": [0], "total_count": 1}
    )
    assert response.status_code == 422
    assert "empty" in response.json()["error"] and "/api/initialize" in response.json()["error"]


async def test_history_and_parameters_of_a_new_session(client: httpx.AsyncClient) -> None:
    assert (await client.get("/api/history")).json() == {"history": []}
    assert (await client.get("/api/parameters")).json() == {}


@pytest.mark.parametrize(
    ("path", "body"),
    [("/api/initialize", {}), ("/api/update", {"request": "x"}), ("/api/enhance", {"prompt": "x"})],
)
async def test_missing_fields_are_422(client: httpx.AsyncClient, path: str, body: dict) -> None:
    response = await client.post(path, json=body)
    assert response.status_code == 422
    assert response.json()["field"] in ("prompt", "user_request", "rough_prompt")


async def test_model_failure_reaches_the_client_as_502(
    client: httpx.AsyncClient, fake_llm: FakeLLM
) -> None:
    fake_llm.add(reply("not json"), reply("still not json"))
    response = await client.post("/api/initialize", json={"prompt": SUNSET})
    assert response.status_code == 502
    assert "still not json" in response.json()["error"]
    assert (await client.get("/api/history")).json() == {"history": []}


# --- sessions -------------------------------------------------------------------------------


async def test_sessions_are_isolated_by_header(
    client: httpx.AsyncClient, fake_llm: FakeLLM
) -> None:
    alice, bob = {"X-Session-Id": "alice"}, {"X-Session-Id": "bob"}
    await initialize(client, fake_llm, "A red fox in snow", headers=alice)
    await initialize(client, fake_llm, "A blue whale at dusk", headers=bob)
    fake_llm.add(reply(stormy_update()))
    response = await client.post("/api/update", json={"user_request": "storm"}, headers=alice)
    assert response.headers["X-Session-Id"] == "alice"

    alice_history = (await client.get("/api/history", headers=alice)).json()["history"]
    bob_history = (await client.get("/api/history", headers=bob)).json()["history"]
    assert [h["prompt"] for h in alice_history] == ["A red fox in snow", STORMY]
    assert [h["prompt"] for h in bob_history] == ["A blue whale at dusk"]
    assert (await client.get("/api/history")).json() == {"history": []}  # default untouched

    # Bob's update starts from Bob's prompt.
    fake_llm.add(reply(stormy_update()))
    await client.post("/api/update", json={"user_request": "storm"}, headers=bob)
    assert "A blue whale at dusk" in fake_llm.received[-1].messages[-1]["content"]


async def test_clients_without_session_share_default(tools: PromptTools, fake_llm: FakeLLM) -> None:
    app = build_app(tools)
    async with api_client(app) as first, api_client(app) as second:
        response = await initialize(first, fake_llm)
        assert response.headers["X-Session-Id"] == "default"
        assert "set-cookie" not in response.headers
        fake_llm.add(reply(stormy_update()))
        assert (await second.post("/api/update", json={"user_request": "x"})).status_code == 200
        assert len((await first.get("/api/history")).json()["history"]) == 2
    session = await tools.session("default")
    assert session is not None and session.prompt == STORMY


async def test_browsers_get_their_own_session_cookie(tools: PromptTools, fake_llm: FakeLLM) -> None:
    app = build_app(tools)
    browser = {"Sec-Fetch-Mode": "cors", "Sec-Fetch-Site": "same-origin"}
    async with api_client(app, headers=browser) as one, api_client(app, headers=browser) as two:
        response = await initialize(one, fake_llm)
        cookie = response.headers["set-cookie"]
        assert cookie.startswith("prompt_session=")
        assert "HttpOnly" in cookie and "samesite=lax" in cookie.lower() and "Path=/" in cookie
        sid = one.cookies["prompt_session"]
        assert response.headers["X-Session-Id"] == sid != "default"

        # The cookie comes back: same session, no new cookie.
        again = await one.get("/api/history")
        assert "set-cookie" not in again.headers
        assert len(again.json()["history"]) == 1

        # Another browser has its own, empty session.
        other = await two.get("/api/history")
        assert other.json() == {"history": []}
        assert two.cookies["prompt_session"] != sid
    assert (await tools.history("default")) == []


async def test_header_wins_over_cookie(client: httpx.AsyncClient, fake_llm: FakeLLM) -> None:
    await initialize(client, fake_llm, headers={"X-Session-Id": "from-header"})
    client.cookies.set("prompt_session", "from-cookie")
    response = await client.get("/api/history", headers={"X-Session-Id": "from-header"})
    assert len(response.json()["history"]) == 1
    assert (await client.get("/api/history")).headers["X-Session-Id"] == "from-cookie"


@pytest.mark.parametrize("bad", ["", "has space", "x" * 65, "../etc", "-leading"])
async def test_bad_session_header_is_422(client: httpx.AsyncClient, bad: str) -> None:
    response = await client.get("/api/history", headers={"X-Session-Id": bad})
    assert response.status_code == 422
    assert response.json()["field"] == "X-Session-Id"


async def test_concurrent_updates_keep_every_history_entry(
    client: httpx.AsyncClient, fake_llm: FakeLLM
) -> None:
    await initialize(client, fake_llm)
    updates = 6
    for n in range(updates):
        fake_llm.add(reply({**stormy_update(f"step {n}"), "prompt": f"{STORMY}, take {n}"}))
    responses = await asyncio.gather(
        *(client.post("/api/update", json={"user_request": f"r{n}"}) for n in range(updates))
    )
    assert all(r.status_code == 200 for r in responses)
    history = (await client.get("/api/history")).json()["history"]
    assert len(history) == 1 + updates
    assert sorted(h["description"] for h in history[1:]) == sorted(
        f"step {n}" for n in range(updates)
    )


# --- not configured -------------------------------------------------------------------------

LLM_CALLS = [
    ("/api/initialize", {"prompt": "x"}),
    ("/api/update", {"user_request": "x"}),
    ("/api/enhance", {"rough_prompt": "x"}),
    ("/api/generate-variations", {"selected_indices": [0], "total_count": 1}),
    ("/api/scenes/draft", {"brief": "x"}),
]


async def test_not_configured_is_503_everywhere_and_nothing_else_breaks(
    http: httpx.AsyncClient, sqlite_db: Database, tmp_path: Path
) -> None:
    tools = PromptTools.from_settings(Settings(data_dir=tmp_path), http=http, db=sqlite_db)
    async with api_client(build_app(tools)) as client:
        for path, body in LLM_CALLS:
            response = await client.post(path, json=body)
            assert response.status_code == 503, path
            message = response.json()["error"]
            for var in ("LLM_BASE_URL", "LLM_MODEL", "LLM_API_KEY"):
                assert var in message, (path, message)
        assert (await client.get("/api/history")).json() == {"history": []}
        assert (await client.get("/api/parameters")).json() == {}
        status = (await client.get("/api/prompt-tools/status")).json()
        assert status["configured"] is False
        assert status["model"] is None and status["base_url"] is None
        assert "LLM_MODEL" in status["message"]
        assert (await client.get("/openapi.json")).status_code == 200


async def test_status_when_configured(client: httpx.AsyncClient, fake_llm: FakeLLM) -> None:
    response = await client.get("/api/prompt-tools/status")
    body = response.json()
    assert body == {
        "configured": True,
        "model": MODEL,
        "base_url": fake_llm.base_url,
        "message": body["message"],
    }
    assert MODEL in body["message"]
    assert "sk-" not in response.text  # the API key never leaves the server
    assert fake_llm.received == []


# --- scene drafts ---------------------------------------------------------------------------


def scene_answer(names: list[str]) -> dict[str, Any]:
    return {
        "scenes": [
            {"scenario": name, "description": f"A barista in a green apron, {name} shot"}
            for name in names
        ]
    }


async def test_draft_scenes_default_names_stored_through_the_lead_callable(
    tools: PromptTools, fake_llm: FakeLLM
) -> None:
    saved: list[list[dict]] = []

    async def save_scene_session(scenes: list[dict]) -> str:
        saved.append(scenes)
        return "scene-session-1"

    # The model answers out of order and with different spelling; we hand back ours.
    answer = scene_answer(["CTA", "hook", "Problem", "solution"])
    fake_llm.add(reply(answer))
    async with api_client(build_app(tools, save_scene_session)) as client:
        response = await client.post(
            "/api/scenes/draft", json={"brief": "A coffee subscription for busy parents"}
        )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["session_id"] == "scene-session-1"
    assert [s["scenario"] for s in body["scenes"]] == list(DEFAULT_SCENARIOS)
    assert body["scenes"][0]["description"] == "A barista in a green apron, hook shot"
    assert saved == [body["scenes"]]
    shown = fake_llm.received[0].messages[-1]["content"]
    assert "coffee subscription" in shown and '"hook", "problem", "solution", "cta"' in shown


async def test_draft_scenes_without_the_callable(
    client: httpx.AsyncClient, fake_llm: FakeLLM
) -> None:
    fake_llm.add(reply(scene_answer(["opening", "closing"])))
    response = await client.post(
        "/api/scenes/draft", json={"brief": "A lighthouse", "scenes": ["opening", "closing"]}
    )
    assert response.status_code == 200, response.text
    assert response.json()["session_id"] is None
    assert [s["scenario"] for s in response.json()["scenes"]] == ["opening", "closing"]


@pytest.mark.parametrize("body", [{"scenes": 3}, {"count": 3}, {"scenes": 3, "count": 3}])
async def test_draft_scenes_by_count(
    client: httpx.AsyncClient, fake_llm: FakeLLM, body: dict
) -> None:
    fake_llm.add(reply(scene_answer(["scene_1", "scene_2", "scene_3"])))
    response = await client.post("/api/scenes/draft", json={"brief": "A lighthouse", **body})
    assert [s["scenario"] for s in response.json()["scenes"]] == ["scene_1", "scene_2", "scene_3"]


async def test_draft_scenes_missing_scene_is_retried(
    client: httpx.AsyncClient, fake_llm: FakeLLM
) -> None:
    fake_llm.add(
        reply(scene_answer(["hook", "problem"])), reply(scene_answer(list(DEFAULT_SCENARIOS)))
    )
    response = await client.post("/api/scenes/draft", json={"brief": "Coffee"})
    assert response.status_code == 200
    assert 'no scene for "solution", "cta"' in fake_llm.received[1].messages[-1]["content"]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"brief": ""}, "brief"),
        ({"brief": "x", "scenes": ["a", "A"]}, "scenes"),
        ({"brief": "x", "scenes": []}, "scenes"),
        ({"brief": "x", "scenes": ["a", "b"], "count": 3}, "count"),
    ],
)
async def test_draft_scenes_bad_input(
    client: httpx.AsyncClient, fake_llm: FakeLLM, body: dict, field: str
) -> None:
    response = await client.post("/api/scenes/draft", json=body)
    assert response.status_code == 422
    assert response.json()["field"].split(".")[0] == field
    assert fake_llm.received == []


# --- wiring ---------------------------------------------------------------------------------


async def test_openapi_has_every_route_with_its_docstring(client: httpx.AsyncClient) -> None:
    paths = (await client.get("/openapi.json")).json()["paths"]
    expected = {
        ("post", "/api/initialize"),
        ("post", "/api/update"),
        ("post", "/api/enhance"),
        ("post", "/api/generate-variations"),
        ("get", "/api/history"),
        ("get", "/api/parameters"),
        ("get", "/api/prompt-tools/status"),
        ("post", "/api/scenes/draft"),
    }
    for method, path in expected:
        operation = paths[path][method]
        assert operation["tags"] == ["prompt tools"]
        assert operation["description"], path


async def test_lifespan_wiring_as_documented(settings: Settings, fake_llm: FakeLLM) -> None:
    """The lines the report gives the lead, run as a lifespan."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        db = Database(settings.db_url)
        await db.migrate()
        async with httpx.AsyncClient() as http:
            tools = PromptTools.from_settings(settings, http=http, db=db)
            app.dependency_overrides[get_prompt_tools] = lambda: tools
            yield
        await db.close()

    app = FastAPI(lifespan=lifespan)

    app.dependency_overrides[authenticate] = lambda: ANONYMOUS  # an open proxy
    install_error_handlers(app)
    app.include_router(router)
    async with app.router.lifespan_context(app), api_client(app) as client:
        response = await initialize(client, fake_llm)
        assert response.status_code == 200
        assert len((await client.get("/api/history")).json()["history"]) == 1


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        ("/api/initialize", {"prompt": "   "}, "prompt"),
        ("/api/update", {"user_request": "\n"}, "user_request"),
        ("/api/enhance", {"rough_prompt": " "}, "rough_prompt"),
        ("/api/scenes/draft", {"brief": "  "}, "brief"),
    ],
)
async def test_blank_text_is_422(
    client: httpx.AsyncClient, fake_llm: FakeLLM, path: str, body: dict, field: str
) -> None:
    response = await client.post(path, json=body)
    assert response.status_code == 422
    assert response.json()["field"] == field
    assert fake_llm.received == []


async def test_session_header_and_cookie_are_documented(client: httpx.AsyncClient) -> None:
    operation = (await client.get("/openapi.json")).json()["paths"]["/api/update"]["post"]
    where = {(p["in"], p["name"]) for p in operation["parameters"]}
    assert where == {("header", "X-Session-Id"), ("cookie", "prompt_session")}
