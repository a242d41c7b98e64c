"""Safe retries: `Idempotency-Key` on any POST.

The first request with a key runs and, when it succeeds (2xx), its answer (status, body,
content type) is kept in the database for `IDEMPOTENCY_TTL_S` (24 h); the same key with the
same body again gets that answer back instead of a second job. The same key with another
body is a 422 naming `Idempotency-Key`. A duplicate that arrives while the first is still
running waits for it and gets its answer (concurrent retries make one job). An answer that
is not a success is not kept: the client may try again with the same key.

Keys are per API key (the credential presented, hashed; "anonymous" on an open proxy) and
per route. The body is fingerprinted as it streams to the route, never held whole: a JSON
body, or a multipart one with its files (its part boundary left out, which every client
draws anew for each send, retries included).
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
        route = scope["path"]
        fingerprint = Fingerprint(route, request.headers.get("content-type", ""))
        owner = _scope_of(request)
        await self._handle(store, owner, key, route, fingerprint, scope, receive, send)

    async def _handle(
        self,
        store: IdempotencyStore,
        owner: str,
        key: str,
        route: str,
        fingerprint: Fingerprint,
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
            found = await store.claim(owner, key, route)
            if found is not None:
                await self._replay(found, fingerprint, scope, receive, send)
                return
            try:
                status, content_type, answer = await self._run(scope, receive, fingerprint, send)
                if 200 <= status < 300:
                    await fingerprint.finish(receive)  # the rest of a body the route left
            except BaseException:
                await asyncio.shield(store.release(owner, key))
                raise
            if 200 <= status < 300:
                await store.keep(owner, key, status, content_type, answer, fingerprint.digest())
            else:
                await store.release(owner, key)
        finally:
            done.set()
            store.running.pop(held, None)

    async def _replay(
        self, row: Any, fingerprint: Fingerprint, scope: Scope, receive: Receive, send: Send
    ) -> None:
        async def nothing() -> Message:
            return {"type": "http.request", "body": b"", "more_body": False}

        if row.status is None:
            message = "a request with this key is still running; retry in a moment"
            response = _problem(409, "Idempotency-Key", message)
            response.headers["Retry-After"] = "1"
            await response(scope, nothing, send)
            return
        await fingerprint.finish(receive)
        if row.fingerprint != fingerprint.digest():
            message = "this key was used with another body (or route); use a new key"
            await _problem(422, "Idempotency-Key", message)(scope, nothing, send)
        else:
            response = Response(row.body, status_code=row.status, media_type=row.content_type)
            response.headers["Idempotent-Replayed"] = "true"
            await response(scope, nothing, send)

    async def _run(
        self, scope: Scope, receive: Receive, fingerprint: Fingerprint, send: Send
    ) -> tuple[int, str, bytes]:
        """Run the app, its body fingerprinted as it reads it, passing its answer on and
        keeping a copy."""
        status, content_type = 500, ""
        chunks: list[bytes] = []

        async def reading() -> Message:
            message = await receive()
            fingerprint.update(message)
            return message

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

        await self.app(scope, reading, copy)
        return status, content_type, b"".join(chunks)


class Fingerprint:
    """SHA-256 of the route and the body, fed as the body streams by. A multipart body's
    boundary is replaced by a fixed marker (a retry of the same form draws another)."""

    def __init__(self, route: str, content_type: str) -> None:
        self._hash = hashlib.sha256(route.encode() + b"\0")
        boundary = _boundary(content_type)
        self._marker = b"--" + boundary.encode("latin-1") if boundary else b""
        self._tail = b""  # held back: it may be the start of a marker split across chunks
        self.complete = False

    def update(self, message: Message) -> None:
        if message["type"] != "http.request" or self.complete:
            return
        data = self._tail + message.get("body", b"")
        self.complete = not message.get("more_body", False)
        if self._marker:
            data = data.replace(self._marker, b"--\0boundary\0")
            cut = max(len(data) - (0 if self.complete else len(self._marker) - 1), 0)
            data, self._tail = data[:cut], data[cut:]
        self._hash.update(data)

    async def finish(self, receive: Receive) -> None:
        """Read what is left of the body (a route that answered without all of it)."""
        while not self.complete:
            message = await receive()
            if message["type"] != "http.request":
                break  # the client left: what was read is what there is
            self.update(message)

    def digest(self) -> str:
        final = self._hash.copy()
        final.update(self._tail)
        return final.hexdigest()


def _boundary(content_type: str) -> str | None:
    kind, _, params = content_type.partition(";")
    if not kind.strip().lower().startswith("multipart/"):
        return None
    for param in params.split(";"):
        name, _, value = param.strip().partition("=")
        if name.strip().lower() == "boundary" and value.strip():
            return value.strip().strip('"')
    return None
