"""Which replica drives which ComfyUI backend: leases in PostgreSQL.

Any number of proxy processes (replicas) may share one PostgreSQL database. Each backend is
driven (its websocket followed, its jobs submitted and tracked) by exactly one of them at a
time, the holder of its row in `backend_leases`:

- every `lease_ttl_s / 3` each replica, in one transaction, marks itself alive (`replicas`),
  renews the leases it holds, and takes free or expired ones while it holds fewer than its
  share, `ceil(backends / live replicas)`; one holding more than its share stops feeding one
  backend and hands it over once nothing of its own runs there;
- the expiry is the database's clock plus the TTL, so a replica that dies, or cannot reach the
  database, loses its backends within `lease_ttl_s`. One that cannot renew stops driving them
  (fences itself) before its leases can run out, by its own clock started before it asked;
- the websocket client id belongs to the lease, not to the replica: ComfyUI sends a prompt's
  events only to the client id it was submitted with, so the replica that takes a backend
  over hears the prompts it inherited and re-attaches their jobs (`Dispatcher.adopt`).

With SQLite the proxy is a single process (`proxy.instance` sees to it) and drives every
backend without any of this.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import socket
from collections.abc import Awaitable, Callable
from contextlib import suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import (
    Boolean,
    Column,
    DateTime,
    Integer,
    String,
    Table,
    delete,
    func,
    literal,
    or_,
    select,
    update,
)
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection

from proxy.db import Database, metadata
from proxy.jobs.backends import Backend, BackendPool
from proxy.jobs.store import as_utc, iso_utc

log = logging.getLogger("proxy.replicas")

replicas_table = Table(
    "replicas",
    metadata,
    Column("id", String(128), primary_key=True),
    Column("host", String(255), nullable=False),
    Column("pid", Integer, nullable=False),
    Column("started_at", DateTime(timezone=True), nullable=False),
    Column("seen_at", DateTime(timezone=True), nullable=False, index=True),
)

leases_table = Table(
    "backend_leases",
    metadata,
    Column("backend", String(512), primary_key=True),
    Column("owner", String(128), nullable=False),
    Column("client_id", String(64), nullable=False),
    Column("connected", Boolean, nullable=False),
    Column("acquired_at", DateTime(timezone=True), nullable=False),
    Column("expires_at", DateTime(timezone=True), nullable=False),
)


class ReplicaConflict(RuntimeError):
    """Another live replica goes by this one's name; the message says which."""


def default_replica_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"[:128]


@dataclass(frozen=True)
class Replica:
    """This process, as the other replicas see it."""

    id: str
    host: str = field(default_factory=socket.gethostname)
    pid: int = field(default_factory=os.getpid)
    started_at: datetime = field(default_factory=lambda: datetime.now(UTC))


class LeaseKeeper:
    """Holds this replica's leases, gains and loses backends; see the module docstring.

    `on_gained(backend)` runs once the lease is ours (the socket is already rebound to the
    lease's client id, not yet started); `on_lost(backend)` before it is given up or once it is
    known to be gone, and must stop everything of this process on that backend.
    """

    def __init__(
        self,
        *,
        db: Database,
        pool: BackendPool,
        replica: Replica,
        ttl_s: float,
        client_id: str,
        on_gained: Callable[[Backend], Awaitable[None]],
        on_lost: Callable[[Backend], Awaitable[None]],
    ) -> None:
        self.db = db
        self.pool = pool
        self.replica = replica
        self.ttl_s = ttl_s
        self.interval_s = ttl_s / 3
        # The client id this replica offers a backend nobody has driven yet (the one of its
        # data dir: a single proxy that becomes a replica keeps hearing its prompts).
        self.client_id = client_id
        self.on_gained = on_gained
        self.on_lost = on_lost
        self.live_replicas = 1
        # The backends other replicas hold live leases on (some may be unknown here).
        self.held: set[str] = set()
        self.rounds = 0
        self.last_error: str | None = None
        # Loop time until which the leases held are surely still ours.
        self._valid_until = 0.0
        self._task: asyncio.Task[None] | None = None
        self._kick = asyncio.Event()

    @property
    def mine(self) -> list[Backend]:
        return [b for b in self.pool.backends if b.mine]

    async def start(self) -> None:
        """Take this replica's first leases, then keep them renewed in the background.
        Raises ReplicaConflict when a live replica already goes by this replica's name."""
        for backend in self.pool.backends:
            backend.mine = False
        await self._check_name()
        try:
            await self._round()
        except (OSError, SQLAlchemyError) as exc:
            # The loop tries again within a third of the TTL; the start must not fail for it.
            log.warning("replica %s: could not take leases at start: %s", self.replica.id, exc)
        self._task = asyncio.create_task(self._loop(), name="leases")

    async def _check_name(self) -> None:
        await announce(self.db, self.replica, self.ttl_s)

    async def close(self) -> None:
        """Stop driving every backend, then let the others take them at once."""
        if self._task is not None:
            self._task.cancel()
            with suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        held = self.mine
        for backend in held:
            await self._lose(backend, "this replica is stopping")
        try:
            async with asyncio.timeout(5), self.db.transaction() as conn:
                await conn.execute(
                    update(leases_table)
                    .where(leases_table.c.owner == self.replica.id)
                    .values(expires_at=func.now(), connected=False)
                )
                await conn.execute(
                    delete(replicas_table).where(replicas_table.c.id == self.replica.id)
                )
        except (OSError, SQLAlchemyError, TimeoutError) as exc:
            log.warning("replica %s: leases left to expire: %s", self.replica.id, exc)

    def kick(self) -> None:
        """Run a round soon (a backend's websocket changed: the others should know)."""
        self._kick.set()

    def _deadline(self, loop: asyncio.AbstractEventLoop) -> float:
        """When the next wait or round must end: a third of the TTL away, but never past
        the moment the leases held stop being surely ours (the fence must not wait for a
        round that hangs)."""
        deadline = loop.time() + self.interval_s
        return min(deadline, self._valid_until) if self.mine else deadline

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            with suppress(TimeoutError):
                async with asyncio.timeout_at(self._deadline(loop)):
                    await self._kick.wait()
            self._kick.clear()
            try:
                async with asyncio.timeout_at(self._deadline(loop)):
                    await self._round()
                self.last_error = None
            except asyncio.CancelledError:
                raise
            except (OSError, SQLAlchemyError, TimeoutError) as exc:
                self.last_error = f"{type(exc).__name__}: {exc}"
                log.warning("replica %s: leases not renewed: %s", self.replica.id, exc)
            except Exception as exc:  # a defect: logged, and the next round tries again
                self.last_error = f"{type(exc).__name__}: {exc}"
                log.exception("replica %s: lease round failed", self.replica.id)
            if self.mine and loop.time() >= self._valid_until:
                for backend in self.mine:
                    await self._lose(
                        backend,
                        f"its lease could not be renewed for {self.ttl_s:g} s "
                        f"({self.last_error or 'no answer'})",
                    )

    async def _round(self) -> None:
        loop = asyncio.get_running_loop()
        # Counted from before asking: the database's expiry is later than this.
        valid_until = loop.time() + self.ttl_s - min(1.0, self.ttl_s / 10)
        ttl = literal(timedelta(seconds=self.ttl_s))
        gained: list[tuple[Backend, str]] = []
        async with self.db.transaction() as conn:
            await self._alive(conn)
            held = await self._renew(conn, ttl)
            live = await conn.execute(
                select(func.count()).where(replicas_table.c.seen_at > func.now() - ttl)
            )
            self.live_replicas = max(1, int(live.scalar_one()))
            share = math.ceil(len(self.pool.backends) / self.live_replicas)
            for backend in self.pool.backends:
                if len(held) >= share:
                    break
                if backend.name in held:
                    continue
                client_id = await self._take(conn, backend, ttl)
                if client_id is not None:
                    held.add(backend.name)
                    gained.append((backend, client_id))
            leases = (await conn.execute(select(leases_table))).mappings().all()
        self._valid_until = valid_until
        self.rounds += 1
        for backend in self.mine:
            if backend.name not in held:
                await self._lose(backend, "another replica holds its lease now")
        self._read(leases)
        for backend, client_id in gained:
            if not backend.mine:
                backend.socket.rebind(client_id)  # stopped while not ours
                backend.mine = True
                backend.draining = False
                log.info(
                    "replica %s drives %s (client id %s)",
                    self.replica.id,
                    backend.name,
                    backend.socket.client_id,
                )
                await self.on_gained(backend)
        await self._rebalance(share)

    async def _alive(self, conn: AsyncConnection) -> None:
        await _mark_alive(conn, self.replica)

    async def _renew(self, conn: AsyncConnection, ttl: Any) -> set[str]:
        c = leases_table.c
        mine = [b.name for b in self.mine]
        if not mine:
            return set()
        connected = [b.name for b in self.mine if b.socket.connected]
        rows = await conn.execute(
            update(leases_table)
            .where(c.owner == self.replica.id)
            .where(c.backend.in_(mine))
            .where(c.expires_at > func.now())
            .values(expires_at=func.now() + ttl, connected=c.backend.in_(connected or [""]))
            .returning(c.backend)
        )
        return {row.backend for row in rows}

    async def _take(self, conn: AsyncConnection, backend: Backend, ttl: Any) -> str | None:
        """The lease of a backend nobody holds (or whose holder let it run out), with the
        client id to use; None when another replica holds it."""
        c = leases_table.c
        statement = pg_insert(leases_table).values(
            backend=backend.name,
            owner=self.replica.id,
            client_id=self.client_id,
            connected=False,
            acquired_at=func.now(),
            expires_at=func.now() + ttl,
        )
        excluded = statement.excluded
        row = (
            await conn.execute(
                statement.on_conflict_do_update(
                    index_elements=[c.backend],
                    set_={
                        "owner": excluded.owner,
                        "connected": False,
                        "acquired_at": excluded.acquired_at,
                        "expires_at": excluded.expires_at,
                    },
                    # Ours already (a renewal we did not hear back from) counts as free.
                    where=or_(c.expires_at <= func.now(), c.owner == self.replica.id),
                ).returning(c.client_id)
            )
        ).first()
        return None if row is None else str(row.client_id)

    def _read(self, leases: Any) -> None:
        """What every backend's lease says now (shown by /api/backends; the dispatcher's
        "is any backend reachable" counts the others' connected websockets)."""
        by_backend = {row["backend"]: row for row in leases}
        now = datetime.now(UTC)
        self.held = {
            str(row["backend"])
            for row in leases
            if as_utc(row["expires_at"]) > now and row["owner"] != self.replica.id
        }
        for backend in self.pool.backends:
            row = by_backend.get(backend.name)
            expires = as_utc(row["expires_at"]) if row is not None else None
            live = row is not None and expires is not None and expires > now
            backend.owner = str(row["owner"]) if live and row is not None else None
            backend.lease_expires_at = expires if live else None
            backend.owner_connected = bool(live and row is not None and row["connected"])

    async def _rebalance(self, share: int) -> None:
        """Holding more than our share: stop feeding one backend, and give it up once
        nothing of ours runs on it (its jobs are not moved)."""
        held = self.mine
        excess = len(held) - share
        if excess <= 0:
            for backend in held:
                backend.draining = False
            return
        draining = [b for b in held if b.draining]
        if len(draining) < excess:
            for backend in sorted(held, key=lambda b: (len(b.inflight), -b.index)):
                if not backend.draining:
                    backend.draining = True
                    draining.append(backend)
                    log.info(
                        "replica %s hands %s over (%d replicas share %d backends)",
                        self.replica.id,
                        backend.name,
                        self.live_replicas,
                        len(self.pool.backends),
                    )
                if len(draining) >= excess:
                    break
        for backend in draining:
            if not backend.inflight:
                await self._lose(backend, "handed over to balance the replicas")
                await self._release(backend)

    async def _release(self, backend: Backend) -> None:
        async with self.db.transaction() as conn:
            await conn.execute(
                update(leases_table)
                .where(leases_table.c.backend == backend.name)
                .where(leases_table.c.owner == self.replica.id)
                .values(expires_at=func.now(), connected=False)
            )

    async def _lose(self, backend: Backend, why: str) -> None:
        if not backend.mine:
            return
        backend.mine = False
        backend.draining = False
        log.info("replica %s no longer drives %s: %s", self.replica.id, backend.name, why)
        try:
            await self.on_lost(backend)
        finally:
            await backend.socket.close()


async def _mark_alive(conn: AsyncConnection, r: Replica) -> None:
    statement = pg_insert(replicas_table).values(
        id=r.id, host=r.host, pid=r.pid, started_at=r.started_at, seen_at=func.now()
    )
    await conn.execute(
        statement.on_conflict_do_update(
            index_elements=[replicas_table.c.id],
            set_={"seen_at": func.now(), "host": r.host, "pid": r.pid},
        )
    )


async def announce(db: Database, replica: Replica, ttl_s: float) -> None:
    """Say this replica is alive (before it starts anything: the others count it from now
    on), or raise ReplicaConflict when a live replica goes by its name already (two under one
    name would both renew the same leases)."""
    r = replicas_table.c
    ttl = literal(timedelta(seconds=ttl_s))
    async with db.transaction() as conn:
        row = (
            await conn.execute(
                select(replicas_table).where(r.id == replica.id).where(r.seen_at > func.now() - ttl)
            )
        ).first()
        if row is not None and (row.host, row.pid) != (replica.host, replica.pid):
            raise ReplicaConflict(
                f"REPLICA_ID={replica.id!r} is in use by a live replica (pid {row.pid} on "
                f"{row.host}): give each replica its own name, or leave REPLICA_ID unset"
            )
        await _mark_alive(conn, replica)


async def live_replica_ids(db: Database, ttl_s: float) -> list[str]:
    """The names of the replicas seen within `ttl_s`."""
    ttl = literal(timedelta(seconds=ttl_s))
    query = select(replicas_table.c.id).where(replicas_table.c.seen_at > func.now() - ttl)
    async with db.engine.connect() as conn:
        return [str(row.id) for row in await conn.execute(query)]


async def live_replicas(db: Database, ttl_s: float) -> list[dict[str, Any]]:
    """The replicas seen within `ttl_s`, each with the backends it holds."""
    ttl = literal(timedelta(seconds=ttl_s))
    async with db.engine.connect() as conn:
        replicas = (
            await conn.execute(
                select(replicas_table)
                .where(replicas_table.c.seen_at > func.now() - ttl)
                .order_by(replicas_table.c.started_at, replicas_table.c.id)
            )
        ).mappings()
        rows = [dict(row) for row in replicas]
        held = (
            await conn.execute(
                select(leases_table.c.backend, leases_table.c.owner).where(
                    leases_table.c.expires_at > func.now()
                )
            )
        ).all()
    answer = []
    for row in rows:
        answer.append(
            {
                "id": row["id"],
                "host": row["host"],
                "pid": row["pid"],
                "started_at": iso_utc(row["started_at"]),
                "seen_at": iso_utc(row["seen_at"]),
                "backends": sorted(b for b, owner in held if owner == row["id"]),
            }
        )
    return answer
