"""The websocket side: connected sockets by sid and the ordered outgoing message stream.

Like ComfyUI, anything (the worker thread, HTTP handlers) hands a message to ``send_sync``,
which queues it on the event loop with ``call_soon_threadsafe``; one publisher task sends the
messages one at a time, so each socket sees them in the order they were produced. ``sid=None``
means every socket; a sid without an open socket drops the message.

A message may carry the epoch it was produced in; after a simulated restart the publisher
drops messages of older epochs, so a prompt that was running then leaves no trace.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web

log = logging.getLogger(__name__)


@dataclass
class Connection:
    """One accepted websocket and the request that carried it (for an abrupt drop)."""

    ws: web.WebSocketResponse
    request: web.Request


_Message = tuple[str, Any, "str | None", "int | None"]


class Hub:
    """Sockets by sid plus the publisher that sends queued messages in order."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.connections: dict[str, Connection] = {}
        self.epoch = 0
        self._queue: asyncio.Queue[_Message | Callable[[], None]] = asyncio.Queue()
        self._publisher: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._publisher = self.loop.create_task(self._publish(), name="standin-ws-publisher")

    async def stop(self) -> None:
        if self._publisher is not None:
            self._publisher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._publisher
        await self.drop_all(mode="close")

    # --- producing -----------------------------------------------------------------------

    def send_sync(
        self, event: str, data: Any, sid: str | None = None, epoch: int | None = None
    ) -> None:
        """Queue a message from any thread."""
        self._enqueue((event, data, sid, epoch))

    def call_after_queued(self, callback: Callable[[], None]) -> None:
        """Run ``callback`` on the loop once every message queued before it has been sent."""
        self._enqueue(callback)

    def _enqueue(self, entry: _Message | Callable[[], None]) -> None:
        try:
            self.loop.call_soon_threadsafe(self._queue.put_nowait, entry)
        except RuntimeError:  # the loop is closed: the server is gone, like its sockets
            pass

    # --- sending -------------------------------------------------------------------------

    async def _publish(self) -> None:
        while True:
            entry = await self._queue.get()
            if callable(entry):
                entry()
                continue
            event, data, sid, epoch = entry
            if epoch is not None and epoch != self.epoch:
                continue
            await self.send(event, data, sid)

    async def send(self, event: str, data: Any, sid: str | None = None) -> None:
        message = {"type": event, "data": data}
        if sid is None:
            targets = [c.ws for c in list(self.connections.values())]
        elif sid in self.connections:
            targets = [self.connections[sid].ws]
        else:
            return
        for ws in targets:
            try:
                await ws.send_json(message)
            except (ConnectionError, RuntimeError) as exc:  # a closing socket: log and go on
                log.debug("websocket send failed: %s", exc)

    # --- dropping ------------------------------------------------------------------------

    async def drop_all(self, mode: str = "abort") -> int:
        """Drop every socket: ``abort`` cuts the TCP connection, ``close`` sends a close frame."""
        connections = list(self.connections.values())
        for conn in connections:
            if mode == "abort" and conn.request.transport is not None:
                conn.request.transport.abort()
            else:
                with contextlib.suppress(OSError, RuntimeError):
                    await conn.ws.close(code=1001, message=b"stand-in dropped the connection")
        return len(connections)
