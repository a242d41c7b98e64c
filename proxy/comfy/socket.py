"""The one persistent websocket per ComfyUI backend.

A single reader task owns the connection. It is opened with a fixed client id before
anything is submitted, parses text and binary frames, and hands each event to per-prompt
subscriber queues (demultiplexed by `prompt_id`, which the proxy generates). After a drop it
reconnects with exponential backoff and tells every subscriber (`_reconnected`) so each can
resync from /queue and /history: ComfyUI never replays missed events.
"""

from __future__ import annotations

import asyncio
import enum
import json
import logging
import random
import struct
from collections.abc import Awaitable, Callable
from contextlib import suppress

import websockets
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI

from proxy.comfy.models import DISCONNECTED, RECONNECTED, ComfyEvent

log = logging.getLogger("proxy.comfy.ws")

# Binary frame types (uint32 big-endian header).
PREVIEW_IMAGE = 1
TEXT = 3
PREVIEW_IMAGE_WITH_METADATA = 4


class SocketState(str, enum.Enum):
    CONNECTING = "connecting"  # first attempt, or retrying after a drop
    CONNECTED = "connected"
    DISCONNECTED = "disconnected"  # dropped; waiting out the backoff
    CLOSED = "closed"  # closed by us; no more reconnects


class BackendSocket:
    def __init__(
        self,
        base_url: str,
        client_id: str,
        *,
        heartbeat_s: float = 20.0,
        reconnect_min_s: float = 0.2,
        reconnect_max_s: float = 10.0,
        on_status: Callable[[SocketState], Awaitable[None]] | None = None,
    ) -> None:
        self._base_url = base_url
        self.url = ""
        self.client_id = ""
        self._task: asyncio.Task[None] | None = None
        self.rebind(client_id)
        self.heartbeat_s = heartbeat_s
        self.reconnect_min_s = reconnect_min_s
        self.reconnect_max_s = reconnect_max_s
        self.state = SocketState.CONNECTING
        self.last_error: str | None = None
        self.queue_remaining: int | None = None
        self.connects = 0
        self._on_status = on_status
        self._subscribers: dict[str, set[asyncio.Queue[ComfyEvent]]] = {}
        self._connected = asyncio.Event()
        self._ws: websockets.ClientConnection | None = None

    def rebind(self, client_id: str) -> None:
        """Use another client id from the next start on (a replica taking a backend over
        uses the id its prompts were submitted with: ComfyUI sends a prompt's events only to
        that id). Only while stopped."""
        if self._task is not None:
            raise RuntimeError("rebind a backend socket only while it is stopped")
        scheme = "wss" if self._base_url.startswith("https") else "ws"
        host = self._base_url.split("://", 1)[1].rstrip("/")
        self.url = f"{scheme}://{host}/ws?clientId={client_id}"
        self.client_id = client_id

    # -- subscribers ---------------------------------------------------------------------

    def subscribe(self, prompt_id: str) -> asyncio.Queue[ComfyEvent]:
        """A queue of this prompt's events; call before submitting the prompt."""
        queue: asyncio.Queue[ComfyEvent] = asyncio.Queue()
        self._subscribers.setdefault(prompt_id, set()).add(queue)
        return queue

    def unsubscribe(self, prompt_id: str, queue: asyncio.Queue[ComfyEvent]) -> None:
        queues = self._subscribers.get(prompt_id)
        if queues is not None:
            queues.discard(queue)
            if not queues:
                del self._subscribers[prompt_id]

    def _broadcast(self, event: ComfyEvent) -> None:
        for queues in self._subscribers.values():
            for queue in queues:
                queue.put_nowait(event)

    def _dispatch(self, event: ComfyEvent) -> None:
        if event.type == "status":
            info = event.data.get("status", {}).get("exec_info", {})
            self.queue_remaining = info.get("queue_remaining", self.queue_remaining)
            return
        prompt_id = event.prompt_id
        if prompt_id is None:
            return  # bare `executing` on reconnect, feature_flags, logs, custom broadcasts
        for queue in self._subscribers.get(prompt_id, ()):
            queue.put_nowait(event)

    # -- lifecycle -----------------------------------------------------------------------

    def start(self) -> None:
        if self._task is None:
            if self.state is SocketState.CLOSED:
                # Opened again (a replica regaining the backend): its first connection counts
                # as a reconnection, so followers attached meanwhile resync.
                self.state = SocketState.CONNECTING
            self._task = asyncio.create_task(self._run(), name=f"ws:{self.url}")

    async def wait_connected(self, timeout_s: float) -> bool:
        try:
            async with asyncio.timeout(timeout_s):  # not wait_for: it may swallow a cancel
                await self._connected.wait()
        except TimeoutError:
            return False
        return True

    @property
    def connected(self) -> bool:
        return self.state is SocketState.CONNECTED

    async def close(self) -> None:
        """Close the connection and stop reconnecting; `start` may open it again later."""
        self.state = SocketState.CLOSED
        self._connected.clear()
        if self._ws is not None:
            with suppress(OSError, ConnectionClosed):
                await self._ws.close()
        if self._task is not None:
            self._task.cancel()
            with suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def drop(self) -> None:
        """Close the current connection (the reader reconnects). For tests and health checks."""
        if self._ws is not None:
            await self._ws.close()

    async def _set_state(self, state: SocketState) -> None:
        if state is self.state:
            return
        self.state = state
        if state is SocketState.CONNECTED:
            self._connected.set()
        else:
            self._connected.clear()
        if self._on_status is not None:
            await self._on_status(state)

    async def _run(self) -> None:
        delay = self.reconnect_min_s
        while self.state is not SocketState.CLOSED:
            try:
                async with websockets.connect(
                    self.url,
                    max_size=None,  # executed/progress_state messages can be large
                    ping_interval=self.heartbeat_s,
                    ping_timeout=self.heartbeat_s,
                    open_timeout=10,
                    close_timeout=2,
                ) as ws:
                    self._ws = ws
                    self.connects += 1
                    self.last_error = None
                    delay = self.reconnect_min_s
                    await self._set_state(SocketState.CONNECTED)
                    if self.connects > 1:
                        log.info("websocket %s reconnected; subscribers resync", self.url)
                        self._broadcast(ComfyEvent(type=RECONNECTED))
                    async for frame in ws:
                        self._handle_frame(frame)
            except asyncio.CancelledError:
                raise
            except (OSError, ConnectionClosed, InvalidHandshake, InvalidURI, TimeoutError) as exc:
                self.last_error = f"{type(exc).__name__}: {exc}"
            except Exception as exc:
                # A defect in handling one message must not end the reader while the backend
                # still looks connected: log it, drop this connection and reconnect (the
                # subscribers resync, so nothing is missed).
                log.exception("websocket %s: unexpected error; reconnecting", self.url)
                self.last_error = f"{type(exc).__name__}: {exc}"
            finally:
                self._ws = None
            # close() may have run while we awaited the connection.
            if self.state is SocketState.CLOSED:  # type: ignore[comparison-overlap]
                break
            if self.state is SocketState.CONNECTED:
                log.warning("websocket %s dropped: %s", self.url, self.last_error or "closed")
                self._broadcast(ComfyEvent(type=DISCONNECTED))
            await self._set_state(SocketState.DISCONNECTED)
            await asyncio.sleep(delay * (0.5 + random.random()))  # backoff with jitter
            delay = min(delay * 2, self.reconnect_max_s)
            await self._set_state(SocketState.CONNECTING)

    def _handle_frame(self, frame: str | bytes) -> None:
        if isinstance(frame, bytes):
            self._handle_binary(frame)
            return
        try:
            message = json.loads(frame)
        except ValueError:
            log.warning("websocket %s: a text frame that is not JSON: %.200s", self.url, frame)
            return
        if not isinstance(message, dict) or not isinstance(message.get("type"), str):
            log.warning("websocket %s: unexpected message %.200s", self.url, frame)
            return
        data = message.get("data")
        self._dispatch(
            ComfyEvent(type=message["type"], data=data if isinstance(data, dict) else {})
        )

    def _handle_binary(self, frame: bytes) -> None:
        if len(frame) < 4:
            return
        (kind,) = struct.unpack(">I", frame[:4])
        if kind == PREVIEW_IMAGE_WITH_METADATA and len(frame) >= 8:
            (size,) = struct.unpack(">I", frame[4:8])
            with suppress(ValueError):
                meta = json.loads(frame[8 : 8 + size])
                if isinstance(meta, dict) and meta.get("prompt_id"):
                    self._dispatch(
                        ComfyEvent(
                            type="_preview",
                            data={"prompt_id": meta["prompt_id"], "node": meta.get("node_id")},
                        )
                    )
        # Type 1 previews and type 3 text carry no prompt id: nothing to route.
