"""Bounded request bodies: a JSON (or any non-multipart) body larger than `MAX_JSON_BYTES`
is refused with 413 before the app parses a byte of it. Multipart uploads are streamed to
disk under their own limit (`proxy.media.uploads`), so they pass through untouched.
"""

from __future__ import annotations

import json
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from proxy.media.uploads import human_bytes


def _too_large(limit: int) -> bytes:
    message = (
        f"The request body is larger than {human_bytes(limit)} ({limit} bytes, "
        "MAX_JSON_BYTES); send input files as multipart uploads"
    )
    return json.dumps({"error": message, "detail": message, "field": "body"}).encode()


# Bodies up to this size are read to their end before the 413 (see BodyLimit); larger ones
# are refused at once, and the client may see the connection close instead of the answer.
DRAIN_LIMIT_BYTES = 64 * 1024 * 1024


async def _drain(receive: Receive) -> None:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect" or not message.get("more_body", False):
            return


class BodyLimit:
    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        headers = {k.lower(): v for k, v in scope["headers"]}
        if headers.get(b"content-type", b"").startswith(b"multipart/"):
            await self.app(scope, receive, send)
            return
        declared = headers.get(b"content-length", b"")
        if declared.isdigit() and int(declared) > self.max_bytes:
            if int(declared) <= DRAIN_LIMIT_BYTES:
                # Read (and drop) what the client sends first: closing on unread bytes resets
                # the connection, and the client would never see the 413.
                await _drain(receive)
            await self._refuse(send)
            return
        # No (or a false) Content-Length: read up to the limit here, then replay it.
        body = bytearray()
        more = True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body += message.get("body", b"")
            more = message.get("more_body", False)
            if len(body) > self.max_bytes:
                if more:
                    await _drain(receive)
                await self._refuse(send)
                return
        sent = False

        async def replay() -> Message:
            nonlocal sent
            if sent:
                return await receive()  # the disconnect, when the client goes
            sent = True
            return {"type": "http.request", "body": bytes(body), "more_body": False}

        await self.app(scope, replay, send)

    async def _refuse(self, send: Send) -> None:
        payload = _too_large(self.max_bytes)
        headers: list[Any] = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(payload)).encode()),
            (b"connection", b"close"),
        ]
        await send({"type": "http.response.start", "status": 413, "headers": headers})
        await send({"type": "http.response.body", "body": payload})
