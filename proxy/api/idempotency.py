"""Safe retries: `Idempotency-Key` on any POST.

The first request with a key runs and, when it succeeds (2xx), its answer (status, body,
content type) is kept in the database for `IDEMPOTENCY_TTL_S` (24 h); the same key with the
same body again gets that answer back instead of a second job. The same key with another
body is a 422 naming `Idempotency-Key`. A duplicate that arrives while the first is still
running waits for it and gets its answer (concurrent retries make one job). An answer that
is not a success is not kept: the client may try again with the same key.

Keys are per API key (the credential presented, hashed; "anonymous" on an open proxy) and
per route. JSON bodies only: a multipart create call with a key is a 400 (its body is not
held in memory to compare).
"""

from __future__ import annotations

import asyncio
import hashlib
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from proxy.api.auth import SESSION_COOKIE
from proxy.api.errors import error_body
from proxy.idempotency import MAX_KEY_LENGTH, IdempotencyStore

HEADER = "idempotency-key"


def _problem(status: int, field: str, message: str) -> Response:
    return JSONResponse(error_body(message, field=field), status_code=status)


def _scope_of(request: Request) -> str:
    """Who the key belongs to: the credential presented (never stored as it is)."""
    header = request.headers.get("x-api-key") or request.headers.get("authorization")
    credential = header or request.cookies.get(SESSION_COOKIE) or "anonymous"
    return hashlib.sha256(credential.encode()).hexdigest()


class Idempotency:
    """ASGI middleware: see the module docstring. Outside the body limit, so the body it
    reads is already bounded."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        request = Request(scope, receive)
        key = request.headers.get(HEADER)
        if key is None:
            await self.app(scope, receive, send)
            return
        store: IdempotencyStore | None = getattr(
            getattr(scope["app"].state, "services", None), "idempotency", None
        )
        if store is None:  # not started yet
            await self.app(scope, receive, send)
            return
        key = key.strip()
        if not key or len(key) > MAX_KEY_LENGTH:
            await _problem(400, "Idempotency-Key", f"give 1 to {MAX_KEY_LENGTH} characters")(
                scope, receive, send
            )
            return
        if request.headers.get("content-type", "").startswith("multipart/"):
            message = "works on JSON create calls; upload the file first (POST /api/uploads)"
            await _problem(400, "Idempotency-Key", message)(scope, receive, send)
            return
        body = await request.body()
        route = scope["path"]
        fingerprint = hashlib.sha256(route.encode() + b"\0" + body).hexdigest()
        owner = _scope_of(request)
        await self._handle(store, owner, key, route, fingerprint, body, scope, receive, send)

    async def _handle(
        self,
        store: IdempotencyStore,
        owner: str,
        key: str,
        route: str,
        fingerprint: str,
        body: bytes,
        scope: Scope,
        receive: Receive,
        send: Send,
    ) -> None:
        held = (owner, key)
        # One request per key at a time in this process; duplicates wait for its answer.
        while (waiter := store.running.get(held)) is not None:
            await waiter.wait()
        done = store.running[held] = asyncio.Event()
        try:
            found = await store.claim(owner, key, route, fingerprint)
            if found is not None:
                await self._replay(found, fingerprint, scope, send)
                return
            try:
                status, content_type, answer = await self._run(scope, receive, body, send)
            except BaseException:
                await asyncio.shield(store.release(owner, key))
                raise
            if 200 <= status < 300:
                await store.keep(owner, key, status, content_type, answer)
            else:
                await store.release(owner, key)
        finally:
            done.set()
            store.running.pop(held, None)

    async def _replay(self, row: Any, fingerprint: str, scope: Scope, send: Send) -> None:
        async def nothing() -> Message:
            return {"type": "http.request", "body": b"", "more_body": False}

        if row.fingerprint != fingerprint:
            message = "this key was used with another body (or route); use a new key"
            await _problem(422, "Idempotency-Key", message)(scope, nothing, send)
        elif row.status is None:
            message = "a request with this key is still running; retry in a moment"
            response = _problem(409, "Idempotency-Key", message)
            response.headers["Retry-After"] = "1"
            await response(scope, nothing, send)
        else:
            response = Response(row.body, status_code=row.status, media_type=row.content_type)
            response.headers["Idempotent-Replayed"] = "true"
            await response(scope, nothing, send)

    async def _run(
        self, scope: Scope, receive: Receive, body: bytes, send: Send
    ) -> tuple[int, str, bytes]:
        """Run the app on the already-read body, passing its answer on and keeping a copy."""
        sent = False
        status, content_type = 500, ""
        chunks: list[bytes] = []

        async def replay_body() -> Message:
            nonlocal sent
            if sent:
                return await receive()  # after the body: the disconnect, when it comes
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}

        async def copy(message: Message) -> None:
            nonlocal status, content_type
            if message["type"] == "http.response.start":
                status = int(message["status"])
                for name, value in message.get("headers", []):
                    if name.lower() == b"content-type":
                        content_type = value.decode("latin-1")
            elif message["type"] == "http.response.body":
                chunks.append(message.get("body", b""))
            await send(message)

        await self.app(scope, replay_body, copy)
        return status, content_type, b"".join(chunks)
