"""Job events between replicas: PostgreSQL LISTEN/NOTIFY.

Each replica publishes its job events on its own `EventBus`. The relay sends every local one
as a notification on a channel of the database (one per schema), and publishes the ones the
other replicas send on the local bus, marked not local, so an SSE or websocket client, a
waiting create call or a batch on replica B follows a job that replica A runs. It also keeps
B's memory honest: the job cache takes the newer row (or forgets it), the live progress
overlay shows A's progress, and the dispatcher hears of stops and new jobs (`on_remote`).

- Sending is one task: the events waiting are sent in order, many in one round trip, so a
  burst of progress costs one statement. A notification carries the whole job when it fits
  under PostgreSQL's 8000-byte limit, else only its id (the receiver reads the row).
- Receiving is a connection of its own (asyncpg, outside the pool) that LISTENs, reconnected
  with backoff when it drops. What was sent meanwhile is lost, so after a reconnection the job
  cache is cleared: the next read of any job asks the database.
- A notification is delivered only once its transaction commits, and never to a session that
  did not listen yet: a replica that starts reads the jobs themselves from the database.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import json
import logging
from collections import deque
from collections.abc import Callable
from contextlib import suppress
from typing import Any

import asyncpg
from sqlalchemy import make_url, text
from sqlalchemy.exc import SQLAlchemyError

from proxy.db import Database
from proxy.jobs.bus import PROGRESS, EventBus, JobEvent
from proxy.jobs.models import Job
from proxy.jobs.store import JobStore
from proxy.jobs.writer import JobWriter

log = logging.getLogger("proxy.replicas")

# PostgreSQL refuses a payload of 8000 bytes or more.
MAX_PAYLOAD = 7900
# Events waiting to be sent beyond this are dropped (the receivers then clear their cache).
MAX_PENDING = 10_000
RECONNECT_MIN_S = 0.5
# How often the listening connection is asked whether it is alive, and how long it may take.
KEEPALIVE_S = 10.0
KEEPALIVE_TIMEOUT_S = 5.0
RECONNECT_MAX_S = 10.0

_NOTIFY = text("SELECT pg_notify(:channel, p) FROM unnest(CAST(:payloads AS text[])) AS p")


def channel_for(schema: str | None) -> str:
    """The channel of one schema's proxies (tests share a database, each in its schema)."""
    if not schema:
        return "fastwan_jobs"
    return f"fastwan_jobs_{hashlib.blake2b(schema.encode(), digest_size=6).hexdigest()}"


def listen_dsn(url: str) -> str:
    """The database URL as asyncpg takes it (no driver name, no `schema` option)."""
    parsed = make_url(url).difference_update_query(["schema"]).set(drivername="postgresql")
    return parsed.render_as_string(hide_password=False)


def encode(replica: str, event: JobEvent) -> str:
    note: dict[str, Any] = {"r": replica, "k": event.kind, "j": event.job.model_dump(mode="json")}
    payload = json.dumps(note, separators=(",", ":"))
    if len(payload.encode()) < MAX_PAYLOAD:
        return payload
    return json.dumps({"r": replica, "k": event.kind, "id": event.job.id}, separators=(",", ":"))


class EventRelay:
    def __init__(
        self,
        *,
        db: Database,
        replica: str,
        bus: EventBus,
        store: JobStore,
        writer: JobWriter,
        on_remote: Callable[[str, Job], None],
    ) -> None:
        self.db = db
        self.replica = replica
        self.bus = bus
        self.store = store
        self.writer = writer
        self.on_remote = on_remote
        self.channel = channel_for(db.schema)
        # What an operator sees in pg_stat_activity (at most 63 bytes are kept).
        self.application_name = f"fastwan-proxy {replica} {self.channel}"[:63]
        self._dsn = listen_dsn(db.url)
        self._pending: deque[str] = deque()
        self._dropped = False
        self._has_pending = asyncio.Event()
        self._incoming: asyncio.Queue[str] = asyncio.Queue()
        self._listening = asyncio.Event()
        # Set on every (re)connection of the listener (tests wait on it).
        self.listening_changed = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self.sent = 0
        self.received = 0
        self.connects = 0  # of the listening connection

    async def start(self) -> None:
        """Listen first (bounded wait), then forward this replica's events."""
        self._tasks = [
            asyncio.create_task(self._listen(), name="relay:listen"),
            asyncio.create_task(self._receive(), name="relay:receive"),
            asyncio.create_task(self._send(), name="relay:send"),
        ]
        self.bus.forwarders.append(self.forward)
        with suppress(TimeoutError):
            async with asyncio.timeout(10):
                await self._listening.wait()
        if not self._listening.is_set():
            log.warning("relay: not listening yet; job events of other replicas arrive later")

    async def close(self) -> None:
        with suppress(ValueError):
            self.bus.forwarders.remove(self.forward)
        sender = self._tasks[-1:] if self._tasks else []
        for task in sender:
            task.cancel()
            with suppress(asyncio.CancelledError):
                await task
        # What is still waiting is sent now (a stopping replica's last changes), briefly.
        with suppress(TimeoutError, OSError, SQLAlchemyError):
            async with asyncio.timeout(2):
                while self._pending:
                    await self._flush()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with suppress(asyncio.CancelledError):
                await task
        self._tasks = []

    def forward(self, event: JobEvent) -> None:
        if len(self._pending) >= MAX_PENDING:
            self._pending.popleft()
            self._dropped = True
        self._pending.append(encode(self.replica, event))
        self._has_pending.set()

    # -- sending ---------------------------------------------------------------------------

    async def _send(self) -> None:
        delay = RECONNECT_MIN_S
        while True:
            await self._has_pending.wait()
            self._has_pending.clear()
            try:
                while self._pending:
                    await self._flush()
                delay = RECONNECT_MIN_S
            except (OSError, SQLAlchemyError) as exc:
                log.warning("relay: job events not sent (%s); again in %.1f s", exc, delay)
                await asyncio.sleep(delay)  # backoff before trying again
                delay = min(delay * 2, RECONNECT_MAX_S)
                self._has_pending.set()

    async def _flush(self) -> None:
        batch = list(itertools.islice(self._pending, 500))
        reset = [json.dumps({"r": self.replica, "k": "reset"})] if self._dropped else []
        payloads = batch + reset
        self._dropped = False
        try:
            async with self.db.transaction() as conn:
                await conn.execute(_NOTIFY, {"channel": self.channel, "payloads": payloads})
        except BaseException:
            self._dropped = self._dropped or len(payloads) > len(batch)
            raise
        for _ in batch:
            self._pending.popleft()
        self.sent += len(batch)

    # -- receiving -------------------------------------------------------------------------

    async def _listen(self) -> None:
        delay = RECONNECT_MIN_S
        first = True
        while True:
            lost = asyncio.Event()
            conn: asyncpg.Connection | None = None
            try:
                conn = await asyncpg.connect(
                    self._dsn,
                    timeout=10,
                    server_settings={"application_name": self.application_name},
                )
                conn.add_termination_listener(lambda _conn, lost=lost: lost.set())
                await conn.add_listener(self.channel, self._heard)
                # Whatever was sent before now is not heard: what is cached may be older
                # (also at the first connection, should it come after the start).
                self.store.forget_all()
                if not first:
                    log.info("relay: listening again on %s", self.channel)
                first = False
                self.connects += 1
                delay = RECONNECT_MIN_S
                self._listening.set()
                self.listening_changed.set()
                await self._while_alive(conn, lost)
                log.warning("relay: the listening connection dropped; reconnecting")
            except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
                log.warning("relay: cannot listen (%s); again in %.1f s", exc, delay)
            finally:
                self._listening.clear()
                if conn is not None and not conn.is_closed():
                    with suppress(OSError, asyncpg.PostgresError):
                        await asyncio.shield(conn.close(timeout=2))
            await asyncio.sleep(delay)  # backoff before reconnecting
            delay = min(delay * 2, RECONNECT_MAX_S)

    async def _while_alive(self, conn: asyncpg.Connection, lost: asyncio.Event) -> None:
        """Until the connection ends, or stops answering: a half-open connection (a cut
        network) never reports its end, and would hear nothing more."""
        while True:
            with suppress(TimeoutError):
                async with asyncio.timeout(KEEPALIVE_S):
                    await lost.wait()
                return
            try:
                async with asyncio.timeout(KEEPALIVE_TIMEOUT_S):
                    await conn.fetchval("SELECT 1")
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError) as exc:
                log.warning("relay: the listening connection does not answer (%s)", exc)
                return

    def _heard(self, _conn: object, _pid: int, _channel: str, payload: object) -> None:
        self._incoming.put_nowait(str(payload))

    async def _receive(self) -> None:
        while True:
            payload = await self._incoming.get()
            try:
                await self._apply(payload)
            except (OSError, SQLAlchemyError) as exc:
                # Its job is read afresh from the database the next time anyone asks.
                log.warning("relay: a job event from another replica not applied: %s", exc)
                self.store.forget_all()
            except Exception:  # a defect with one note must not end the relay
                log.exception("relay: a job event from another replica failed")
                self.store.forget_all()

    async def _apply(self, payload: str) -> None:
        note = json.loads(payload)
        if not isinstance(note, dict) or note.get("r") == self.replica:
            return
        self.received += 1
        kind = str(note.get("k"))
        if kind == "reset":
            self.store.forget_all()
            return
        job: Job | None
        if "j" in note:
            job = Job.model_validate(note["j"])
        else:
            job_id = str(note.get("id"))
            self.store.seen_elsewhere(None, job_id)
            job = self.store.peek(job_id) if kind == "deleted" else await self.store.get(job_id)
            if job is None:
                return
        if kind == "deleted":
            self.store.seen_elsewhere(None, job.id)
            self.writer.seen_elsewhere(job, deleted=True)
        elif kind == PROGRESS:
            kept = self.store.peek(job.id)
            if kept is not None and kept.status is not job.status:
                self.store.seen_elsewhere(None, job.id)  # a state change we have not read
            self.writer.seen_elsewhere(job, deleted=False, live=True)
        else:
            self.store.seen_elsewhere(job, job.id)
            self.writer.seen_elsewhere(job, deleted=False)
        self.bus.publish(kind, job, local=False)
        self.on_remote(kind, job)
