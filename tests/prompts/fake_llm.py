"""An OpenAI-compatible chat completions server for tests, served by aiohttp on loopback.

Tests script its answers in order (`server.add(...)`); each request takes the next one. It
records every request and counts how many it is serving at once.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web

Answer = Callable[["FakeLLM", dict[str, Any]], Awaitable[web.StreamResponse]]


@dataclass
class Received:
    headers: dict[str, str]
    body: dict[str, Any]

    @property
    def messages(self) -> list[dict[str, str]]:
        return self.body["messages"]

    @property
    def text(self) -> str:
        """Every message's content, joined: for asserting what the model was shown."""
        return "\n".join(m["content"] for m in self.messages)


def completion(content: str, model: str = "test-model") -> dict[str, Any]:
    return {
        "id": "chatcmpl-test",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": content},
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
    }


def reply(content: Any, *, fenced: bool = False) -> Answer:
    """A 200 whose message is `content` (a dict is sent as JSON), optionally in ```json fences."""
    text = content if isinstance(content, str) else json.dumps(content)
    if fenced:
        text = f"Here is the JSON you asked for:\n```json\n{text}\n```\nLet me know!"

    async def answer(_server: FakeLLM, body: dict[str, Any]) -> web.StreamResponse:
        return web.json_response(completion(text, body.get("model", "")))

    return answer


def raw(status: int, payload: Any) -> Answer:
    """Any status with a JSON (dict) or text body."""

    async def answer(_server: FakeLLM, _body: dict[str, Any]) -> web.StreamResponse:
        if isinstance(payload, str):
            return web.Response(status=status, text=payload)
        return web.json_response(payload, status=status)

    return answer


def slow(delay_s: float, then: Answer) -> Answer:
    """Answer `then`, but only after `delay_s` (the client's timeout is what is under test)."""

    async def answer(server: FakeLLM, body: dict[str, Any]) -> web.StreamResponse:
        await asyncio.sleep(delay_s)
        return await then(server, body)

    return answer


def held(then: Answer) -> Answer:
    """Answer `then` once the test opens `server.gate`."""

    async def answer(server: FakeLLM, body: dict[str, Any]) -> web.StreamResponse:
        await server.gate.wait()
        return await then(server, body)

    return answer


class FakeLLM:
    def __init__(self) -> None:
        self.answers: deque[Answer] = deque()
        self.received: list[Received] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self.gate = asyncio.Event()
        self.changed = asyncio.Condition()
        self._runner: web.AppRunner | None = None
        self.port = 0

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def add(self, *answers: Answer) -> None:
        self.answers.extend(answers)

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._handle)
        # Cancel a handler whose client went away (the timeout tests), and don't wait for it.
        self._runner = web.AppRunner(app, handler_cancellation=True, shutdown_timeout=0.5)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = self._runner.addresses[0][1]

    async def close(self) -> None:
        self.gate.set()
        if self._runner is not None:
            await self._runner.cleanup()

    async def wait_in_flight(self, count: int) -> None:
        async with self.changed:
            await self.changed.wait_for(lambda: self.in_flight >= count)

    async def wait_received(self, count: int) -> None:
        async with self.changed:
            await self.changed.wait_for(lambda: len(self.received) >= count)

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        async with self.changed:
            self.received.append(Received(dict(request.headers), body))
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
            self.changed.notify_all()
        try:
            if not self.answers:
                return web.json_response(
                    {"error": {"message": "fake LLM: no scripted answer left"}}, status=500
                )
            return await self.answers.popleft()(self, body)
        finally:
            async with self.changed:
                self.in_flight -= 1
                self.changed.notify_all()
