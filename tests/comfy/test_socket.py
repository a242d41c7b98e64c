"""The persistent websocket against a real loopback websocket server."""

import asyncio
import json
import struct

import pytest
import websockets

from proxy.comfy import BackendSocket, SocketState
from proxy.comfy.models import DISCONNECTED, RECONNECTED


class FakeComfyWS:
    """Accepts /ws?clientId=..., remembers connections, sends what the test says."""

    def __init__(self):
        self.connections = []
        self.paths = []
        self.connected = asyncio.Queue()

    async def handler(self, ws):
        self.paths.append(ws.request.path)
        self.connections.append(ws)
        await ws.send(
            json.dumps(
                {
                    "type": "status",
                    "data": {"status": {"exec_info": {"queue_remaining": 0}}, "sid": "x"},
                }
            )
        )
        await self.connected.put(ws)
        await ws.wait_closed()


@pytest.fixture
async def server():
    fake = FakeComfyWS()
    async with websockets.serve(fake.handler, "127.0.0.1", 0) as srv:
        port = srv.sockets[0].getsockname()[1]
        fake.url = f"http://127.0.0.1:{port}"
        yield fake


async def test_events_are_demultiplexed_by_prompt_id(server):
    sock = BackendSocket(server.url, "client-1", reconnect_min_s=0.01)
    a, b = sock.subscribe("A"), sock.subscribe("B")
    sock.start()
    try:
        ws = await asyncio.wait_for(server.connected.get(), 5)
        assert server.paths[0] == "/ws?clientId=client-1"
        assert await sock.wait_connected(5)
        await ws.send(json.dumps({"type": "executing", "data": {"node": "3", "prompt_id": "B"}}))
        await ws.send(
            json.dumps(
                {"type": "progress", "data": {"value": 1, "max": 8, "node": "3", "prompt_id": "A"}}
            )
        )
        await ws.send(
            json.dumps({"type": "executing", "data": {"node": "3"}})
        )  # bare: no prompt id
        await ws.send(struct.pack(">II", 1, 1) + b"\xff\xd8jpeg")  # preview without metadata
        meta = json.dumps({"node_id": "3", "prompt_id": "A"}).encode()
        await ws.send(struct.pack(">II", 4, len(meta)) + meta + b"png")
        await ws.send("not json")
        await ws.send(json.dumps({"type": "execution_success", "data": {"prompt_id": "A"}}))
        got_a = [await asyncio.wait_for(a.get(), 5) for _ in range(3)]
        assert [e.type for e in got_a] == ["progress", "_preview", "execution_success"]
        got_b = await asyncio.wait_for(b.get(), 5)
        assert got_b.type == "executing" and b.empty()
        assert sock.queue_remaining == 0
    finally:
        await sock.close()
    assert sock.state is SocketState.CLOSED


async def test_reconnects_after_a_drop_and_tells_subscribers(server):
    states = []

    async def on_status(state):
        states.append(state)

    sock = BackendSocket(server.url, "client-2", reconnect_min_s=0.01, on_status=on_status)
    events = sock.subscribe("P")
    sock.start()
    try:
        first = await asyncio.wait_for(server.connected.get(), 5)
        await first.close()
        assert (await asyncio.wait_for(events.get(), 5)).type == DISCONNECTED
        second = await asyncio.wait_for(server.connected.get(), 5)
        assert (await asyncio.wait_for(events.get(), 5)).type == RECONNECTED
        assert first.state.name == "CLOSED"  # the old socket is fully closed before reconnecting
        assert sock.connects == 2 and second is not first
        assert SocketState.DISCONNECTED in states and states[-1] is SocketState.CONNECTED
    finally:
        await sock.close()


async def test_unsubscribe_stops_delivery(server):
    sock = BackendSocket(server.url, "client-3")
    q = sock.subscribe("P")
    sock.unsubscribe("P", q)
    sock.start()
    try:
        ws = await asyncio.wait_for(server.connected.get(), 5)
        other = sock.subscribe("Q")
        await ws.send(json.dumps({"type": "executing", "data": {"node": "1", "prompt_id": "P"}}))
        await ws.send(json.dumps({"type": "executing", "data": {"node": "1", "prompt_id": "Q"}}))
        await asyncio.wait_for(other.get(), 5)
        assert q.empty()
    finally:
        await sock.close()


async def test_an_unreachable_backend_keeps_retrying_without_raising():
    sock = BackendSocket("http://127.0.0.1:9", "c", reconnect_min_s=0.01, reconnect_max_s=0.02)
    sock.start()
    try:
        assert not await sock.wait_connected(0.3)
        assert sock.last_error is not None and sock.state is not SocketState.CONNECTED
    finally:
        await sock.close()


async def test_a_defect_in_handling_a_message_reconnects_instead_of_going_deaf(server, monkeypatch):
    sock = BackendSocket(server.url, "client-4", reconnect_min_s=0.01)
    events = sock.subscribe("P")
    original, calls = sock._dispatch, []

    def flaky(event):
        calls.append(event.type)
        if event.type == "executing" and calls.count("executing") == 1:
            raise KeyError("a message shape nobody expected")
        original(event)

    monkeypatch.setattr(sock, "_dispatch", flaky)
    sock.start()
    try:
        first = await asyncio.wait_for(server.connected.get(), 5)
        await first.send(json.dumps({"type": "executing", "data": {"node": "1", "prompt_id": "P"}}))
        # The reader logged it, dropped that connection and came back; subscribers resync.
        second = await asyncio.wait_for(server.connected.get(), 5)
        assert (await asyncio.wait_for(events.get(), 5)).type == DISCONNECTED
        assert (await asyncio.wait_for(events.get(), 5)).type == RECONNECTED
        await second.send(
            json.dumps({"type": "executing", "data": {"node": "2", "prompt_id": "P"}})
        )
        got = await asyncio.wait_for(events.get(), 5)
        assert (got.type, got.data["node"]) == ("executing", "2")
        assert sock.state is SocketState.CONNECTED and sock.connects == 2
    finally:
        await sock.close()
