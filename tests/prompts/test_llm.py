from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Callable

import httpx
import pytest
from pydantic import BaseModel

from proxy.errors import LLMError, LLMNotConfigured
from proxy.prompts.llm import LLMClient, ReplyNotUsable, extract_json_object

from .conftest import API_KEY, MODEL
from .fake_llm import FakeLLM, held, raw, reply, slow

MakeLLM = Callable[..., LLMClient]


class Answer(BaseModel):
    title: str
    count: int


MESSAGES = [
    {"role": "system", "content": "You answer in JSON."},
    {"role": "user", "content": "Give me a title and a count."},
]


async def test_valid_json_reply_is_parsed_and_request_is_complete(
    fake_llm: FakeLLM, make_llm: MakeLLM
) -> None:
    fake_llm.add(reply({"title": "Waves", "count": 3}))
    result = await make_llm().complete_json(MESSAGES, Answer, temperature=0.3)
    assert result == Answer(title="Waves", count=3)
    [request] = fake_llm.received
    assert request.headers["Authorization"] == f"Bearer {API_KEY}"
    assert request.body["model"] == MODEL
    assert request.body["messages"] == MESSAGES
    assert request.body["response_format"] == {"type": "json_object"}
    assert request.body["temperature"] == 0.3
    assert request.body["stream"] is False


async def test_no_api_key_sends_no_authorization(fake_llm: FakeLLM, make_llm: MakeLLM) -> None:
    fake_llm.add(reply({"title": "x", "count": 1}))
    await make_llm(api_key=None).complete_json(MESSAGES, Answer)
    assert "Authorization" not in fake_llm.received[0].headers


async def test_json_inside_fences_and_prose(fake_llm: FakeLLM, make_llm: MakeLLM) -> None:
    fake_llm.add(reply({"title": "Fenced", "count": 2}, fenced=True))
    assert (await make_llm().complete_json(MESSAGES, Answer)).title == "Fenced"


async def test_malformed_then_valid_retries_with_the_error(
    fake_llm: FakeLLM, make_llm: MakeLLM
) -> None:
    fake_llm.add(reply('{"title": "Broken", "count": '), reply({"title": "Fixed", "count": 5}))
    result = await make_llm().complete_json(MESSAGES, Answer)
    assert result.title == "Fixed"
    first, second = fake_llm.received
    assert second.messages[: len(MESSAGES)] == MESSAGES
    assert second.messages[-2] == {"role": "assistant", "content": '{"title": "Broken", "count": '}
    assert second.messages[-1]["role"] == "user"
    assert "no JSON object" in second.messages[-1]["content"]


async def test_wrong_shape_then_valid_shows_the_validation_error(
    fake_llm: FakeLLM, make_llm: MakeLLM
) -> None:
    fake_llm.add(reply({"title": "No count"}), reply({"title": "Counted", "count": 1}))
    assert (await make_llm().complete_json(MESSAGES, Answer)).count == 1
    correction = fake_llm.received[1].messages[-1]["content"]
    assert "count: Field required" in correction


async def test_malformed_twice_is_502_showing_the_reply(
    fake_llm: FakeLLM, make_llm: MakeLLM
) -> None:
    fake_llm.add(reply("I would rather write a poem."), reply("Roses are red. " * 200))
    with pytest.raises(LLMError) as caught:
        await make_llm().complete_json(MESSAGES, Answer)
    error = caught.value
    assert error.status_code == 502
    assert "Roses are red." in error.message
    assert "more characters" in error.message  # clipped, not the whole 3000 characters
    assert len(error.message) < 1500
    assert MODEL in error.message and fake_llm.base_url in error.message
    assert len(fake_llm.received) == 2


async def test_400_on_response_format_retries_without_it_and_remembers(
    fake_llm: FakeLLM, make_llm: MakeLLM
) -> None:
    llm = make_llm()
    fake_llm.add(
        raw(400, {"error": {"message": "Unrecognized request argument: response_format"}}),
        reply({"title": "Plain", "count": 1}),
        reply({"title": "Again", "count": 2}),
    )
    assert (await llm.complete_json(MESSAGES, Answer)).title == "Plain"
    assert (await llm.complete_json(MESSAGES, Answer)).title == "Again"
    first, second, third = fake_llm.received
    assert "response_format" in first.body
    assert "response_format" not in second.body
    assert second.messages == MESSAGES
    assert "response_format" not in third.body


async def test_400_without_response_format_too_is_502(fake_llm: FakeLLM, make_llm: MakeLLM) -> None:
    fake_llm.add(raw(400, "bad request one"), raw(400, "context length exceeded"))
    with pytest.raises(LLMError) as caught:
        await make_llm().complete_json(MESSAGES, Answer)
    assert "HTTP 400" in caught.value.message
    assert "context length exceeded" in caught.value.message
    assert len(fake_llm.received) == 2


async def test_slow_answer_times_out_with_a_clear_message(
    fake_llm: FakeLLM, make_llm: MakeLLM
) -> None:
    fake_llm.add(slow(30, reply({"title": "late", "count": 1})))
    started = time.monotonic()
    with pytest.raises(LLMError) as caught:
        await make_llm(timeout_s=0.5).complete_json(MESSAGES, Answer)
    assert time.monotonic() - started < 5
    assert caught.value.status_code == 502
    assert "did not answer within 0.5 s" in caught.value.message
    assert f"{fake_llm.base_url}/chat/completions" in caught.value.message


async def test_server_error_is_502_naming_url_and_body(
    fake_llm: FakeLLM, make_llm: MakeLLM
) -> None:
    fake_llm.add(raw(500, {"error": {"message": "CUDA out of memory"}}))
    with pytest.raises(LLMError) as caught:
        await make_llm().complete_json(MESSAGES, Answer)
    message = caught.value.message
    assert caught.value.status_code == 502
    assert "HTTP 500" in message and "CUDA out of memory" in message
    assert fake_llm.base_url in message
    assert len(fake_llm.received) == 1  # a server failure is not retried


@pytest.mark.parametrize(
    ("status", "hint"),
    [(401, "LLM_API_KEY"), (403, "LLM_API_KEY"), (404, "LLM_BASE_URL"), (429, "rate limit")],
)
async def test_client_errors_say_what_to_check(
    fake_llm: FakeLLM, make_llm: MakeLLM, status: int, hint: str
) -> None:
    fake_llm.add(raw(status, {"error": "nope"}))
    with pytest.raises(LLMError) as caught:
        await make_llm().complete_json(MESSAGES, Answer)
    assert hint in caught.value.message
    assert f"HTTP {status}" in caught.value.message


async def test_connection_refused_names_the_url(http: httpx.AsyncClient) -> None:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    llm = LLMClient(http, base_url=f"http://127.0.0.1:{port}/v1", model=MODEL, timeout_s=2)
    with pytest.raises(LLMError) as caught:
        await llm.complete_json(MESSAGES, Answer)
    assert "Could not connect" in caught.value.message
    assert f"http://127.0.0.1:{port}/v1/chat/completions" in caught.value.message
    assert "LLM_BASE_URL" in caught.value.message


async def test_not_a_chat_completion_is_502(fake_llm: FakeLLM, make_llm: MakeLLM) -> None:
    fake_llm.add(raw(200, {"result": "something else"}))
    with pytest.raises(LLMError) as caught:
        await make_llm().complete_json(MESSAGES, Answer)
    assert "not an OpenAI-style chat completion" in caught.value.message


@pytest.mark.parametrize(
    ("base_url", "model", "missing"),
    [
        (None, None, ["LLM_BASE_URL", "LLM_MODEL"]),
        ("http://x/v1", None, ["LLM_MODEL"]),
        (None, "m", ["LLM_BASE_URL"]),
        ("  ", "m", ["LLM_BASE_URL"]),
    ],
)
async def test_not_configured_is_503_naming_the_settings(
    http: httpx.AsyncClient, base_url: str | None, model: str | None, missing: list[str]
) -> None:
    llm = LLMClient(http, base_url=base_url, model=model)
    assert not llm.configured
    with pytest.raises(LLMNotConfigured) as caught:
        await llm.complete_json(MESSAGES, Answer)
    assert caught.value.status_code == 503
    message = caught.value.message
    for var in missing:
        assert f"{var}" in message.split("not set")[0]
    for var in ("LLM_BASE_URL", "LLM_MODEL", "LLM_API_KEY"):
        assert var in message


async def test_concurrency_limit_is_honoured(fake_llm: FakeLLM, make_llm: MakeLLM) -> None:
    limit, calls = 2, 6
    llm = make_llm(max_concurrency=limit)
    fake_llm.add(*(held(reply({"title": f"t{i}", "count": i})) for i in range(calls)))
    tasks = [asyncio.create_task(llm.complete_json(MESSAGES, Answer)) for _ in range(calls)]
    await asyncio.wait_for(fake_llm.wait_in_flight(limit), timeout=5)
    # With the limit reached and every answer held, no further request may arrive.
    with pytest.raises(asyncio.TimeoutError):
        await asyncio.wait_for(fake_llm.wait_received(limit + 1), timeout=0.3)
    fake_llm.gate.set()
    results = await asyncio.wait_for(asyncio.gather(*tasks), timeout=5)
    assert sorted(r.count for r in results) == list(range(calls))
    assert fake_llm.max_in_flight == limit
    assert len(fake_llm.received) == calls


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("http://h:1/v1", "http://h:1/v1/chat/completions"),
        ("http://h:1/v1/", "http://h:1/v1/chat/completions"),
        ("http://h:1/v1/chat/completions", "http://h:1/v1/chat/completions"),
    ],
)
def test_url(http: httpx.AsyncClient, given: str, expected: str) -> None:
    assert LLMClient(http, base_url=given, model="m").url == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('{"a": 1}', {"a": 1}),
        ('```json\n{"a": {"b": [1, 2]}}\n```', {"a": {"b": [1, 2]}}),
        ('```\n{"a": 2}\n```', {"a": 2}),
        ('Sure! {"a": "x}y"} Hope that helps.', {"a": "x}y"}),
        ('<think>maybe {"a": 0}?</think>\n{"a": 3}', {"a": 3}),
        ('[1, 2] and then {"a": 4}', {"a": 4}),
    ],
)
def test_extract_json_object(text: str, expected: dict) -> None:
    assert extract_json_object(text) == expected


@pytest.mark.parametrize("text", ["", "   ", "no json here", "[1, 2, 3]", '{"a": '])
def test_extract_json_object_refuses(text: str) -> None:
    with pytest.raises(ReplyNotUsable):
        extract_json_object(text)
