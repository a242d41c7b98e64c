"""Backend leases between replicas (`proxy.replicas.leases`), on a real PostgreSQL schema:
who drives which backend, the spread, hand-over, take-over after a death, self-fencing."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack
from typing import Any

import httpx
import pytest

from proxy.comfy import SocketState
from proxy.db import Database
from proxy.jobs.backends import Backend, BackendPool
from proxy.replicas import LeaseKeeper, Replica, live_replicas
from proxy.replicas.leases import ReplicaConflict
from proxy.settings import Settings

URLS = ["http://127.0.0.1:9/a", "http://127.0.0.1:9/b", "http://127.0.0.1:9/c"]
TTL_S = 1.0
DEADLINE_S = 15.0


class Node:
    """One replica's keeper over its own pool (sockets never started: nothing to drive)."""

    def __init__(self, keeper: LeaseKeeper, pool: BackendPool) -> None:
        self.keeper = keeper
        self.pool = pool
        self.gained: list[str] = []
        self.lost: list[str] = []
        self.changed = asyncio.Event()  # set on every loss

    @property
    def held(self) -> set[str]:
        return {b.name for b in self.pool.backends if b.mine}

    def backend(self, name: str) -> Backend:
        found = self.pool.get(name)
        assert found is not None
        return found


@pytest.fixture
async def cluster(postgres_url: str, tmp_path: Any) -> AsyncIterator[Callable[..., Any]]:
    db = Database(postgres_url)
    await db.migrate()
    async with AsyncExitStack() as stack, httpx.AsyncClient() as http:

        async def make(name: str, *, client_id: str | None = None, on_db: Database = db) -> Node:
            settings = Settings(data_dir=tmp_path / name, comfyui_urls=URLS)

            async def on_state(_backend: Backend, _state: SocketState) -> None:
                return None

            pool = BackendPool.build(settings, http, client_id or f"id-{name}", on_state)
            node: Node

            async def gained(backend: Backend) -> None:
                node.gained.append(backend.name)

            async def lost(backend: Backend) -> None:
                node.lost.append(backend.name)
                node.changed.set()

            keeper = LeaseKeeper(
                db=on_db,
                pool=pool,
                replica=Replica(name),
                ttl_s=TTL_S,
                client_id=client_id or f"id-{name}",
                on_gained=gained,
                on_lost=lost,
            )
            node = Node(keeper, pool)
            for backend in pool.backends:
                backend.mine = False
            return node

        yield make
        await stack.aclose()
    await db.close()


async def until(condition: Callable[[], Any], step: Callable[[], Any], what: str) -> None:
    """Run `step` until `condition()` holds: leases run out by the database's clock, so this
    waits for time to pass (bounded), not for another task."""
    async with asyncio.timeout(DEADLINE_S):
        while not condition():
            await step()
            await asyncio.sleep(0.1)  # the next heartbeat, as the keeper's loop would
    assert condition(), what


async def test_one_replica_drives_every_backend_and_a_second_gets_its_share(cluster):
    a = await cluster("a")
    await a.keeper._round()
    assert a.held == set(URLS) and a.gained == URLS

    b = await cluster("b")
    await b.keeper._round()  # b is alive now, but every backend is held
    assert b.held == set()
    await a.keeper._round()  # a sees two replicas: its share is 2, one idle backend goes
    assert len(a.held) == 2 and a.lost == [URLS[2]]
    await b.keeper._round()
    assert b.held == {URLS[2]}
    assert a.held | b.held == set(URLS) and not a.held & b.held
    # The websocket client id belongs to the backend: b hears the prompts a submitted there.
    assert b.backend(URLS[2]).socket.client_id == "id-a"
    # Both see who holds what.
    await a.keeper._round()
    assert {x.name: x.owner for x in a.pool.backends} == {
        URLS[0]: "a",
        URLS[1]: "a",
        URLS[2]: "b",
    }
    replicas = await live_replicas(a.keeper.db, TTL_S * 5)
    assert {r["id"]: r["backends"] for r in replicas} == {"a": URLS[:2], "b": [URLS[2]]}


async def test_a_backend_is_handed_over_only_once_its_jobs_there_have_finished(cluster):
    a = await cluster("a")
    await a.keeper._round()
    for backend in a.pool.backends:
        backend.inflight.add(f"job-on-{backend.index}")
    b = await cluster("b")
    await b.keeper._round()
    await a.keeper._round()
    draining = [x for x in a.pool.backends if x.draining]
    assert len(draining) == 1 and a.held == set(URLS)  # still driven: a job runs there
    assert not draining[0].up  # but it takes no new job
    await b.keeper._round()
    assert b.held == set()
    draining[0].inflight.clear()
    await a.keeper._round()
    await b.keeper._round()
    assert b.held == {draining[0].name} and draining[0].name not in a.held


async def test_a_dead_replicas_backends_are_taken_over_within_the_lease_time(cluster):
    a = await cluster("a")
    b = await cluster("b")
    await a.keeper._round()
    await b.keeper._round()
    assert a.held == set(URLS)
    started = asyncio.get_running_loop().time()
    # a dies: no more heartbeats. b takes everything once a's leases and its row run out.
    await until(lambda: b.held == set(URLS), b.keeper._round, "b drives every backend")
    assert asyncio.get_running_loop().time() - started < TTL_S + 2
    assert sorted(b.gained) == sorted(URLS)
    assert all(x.socket.client_id == "id-a" for x in b.pool.backends)


async def test_a_stopping_replica_hands_its_backends_over_at_once(cluster):
    a = await cluster("a")
    b = await cluster("b")
    await a.keeper._round()
    await b.keeper._round()
    await a.keeper.close()
    assert a.lost == URLS and a.held == set()
    await b.keeper._round()  # no waiting for the lease time
    assert b.held == set(URLS)


async def test_a_replica_that_cannot_renew_stops_driving_before_its_leases_run_out(cluster):
    a = await cluster("a")
    await a.keeper.start()  # its first round, then the loop
    assert a.held == set(URLS)
    healthy = a.keeper.db
    dead = Database("postgresql+asyncpg://postgres@127.0.0.1:9/test")
    a.keeper.db = dead  # the database is unreachable from now on
    b = await cluster("b")
    try:
        async with asyncio.timeout(DEADLINE_S):
            while len(a.lost) < len(URLS):  # a's own loop fences it
                await a.changed.wait()
                a.changed.clear()
        fenced_at = asyncio.get_running_loop().time()
        assert sorted(a.lost) == sorted(URLS)
        assert a.keeper.last_error  # the cause, for the log and health answers
        # Only now can b take them: a stopped first.
        await until(lambda: b.held == set(URLS), b.keeper._round, "b takes over")
        assert asyncio.get_running_loop().time() >= fenced_at
    finally:
        a.keeper.db = healthy
        await a.keeper.close()
        await dead.close()


async def test_a_second_live_replica_under_the_same_name_is_refused(cluster):
    a = await cluster("a")
    await a.keeper._round()
    twin = await cluster("a")
    twin.keeper.replica = Replica("a", host="elsewhere", pid=1)
    with pytest.raises(ReplicaConflict, match="REPLICA_ID='a' is in use by a live replica"):
        await twin.keeper.start()
    assert twin.held == set()


async def test_a_replica_whose_database_hangs_fences_itself_in_time(cluster):
    """A round that never answers must not hold the fence back past the lease's end."""
    a = await cluster("a")
    await a.keeper.start()
    assert a.held == set(URLS)
    surely_ours_until = a.keeper._valid_until
    hung = asyncio.Event()

    async def hangs() -> None:
        hung.set()
        await asyncio.Event().wait()  # the database never answers

    a.keeper._round = hangs  # type: ignore[method-assign]
    try:
        async with asyncio.timeout(DEADLINE_S):
            while len(a.lost) < len(URLS):
                await a.changed.wait()
                a.changed.clear()
        fenced_at = asyncio.get_running_loop().time()
        assert hung.is_set()
        # Before the database could give the leases to anyone (at most TTL after the last
        # renewal began; the fence is due a margin earlier).
        assert fenced_at <= surely_ours_until + 0.2, (fenced_at, surely_ours_until)
    finally:
        await a.keeper.close()
