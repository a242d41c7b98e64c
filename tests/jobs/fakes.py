"""A scripted ComfyUI for unit tests of the dispatcher and the tracker: a fake client and a
fake websocket behind a real `Backend`, and a harness with the real store (SQLite in
tmp_path), writer, bus, outputs and job service. No child process, no network.

By default the fake runs every submitted prompt at once and successfully (one PNG output);
a test scripts any method by replacing its hook (`comfy.on_submit = ...`). Database faults are
injected by `FaultyWriter` / `FaultyStore` (the real classes, with armed failures).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import anyio
from sqlalchemy.exc import OperationalError

from proxy.comfy import ComfyEvent, HistoryEntry, QueueState, SocketState
from proxy.comfy.models import DISCONNECTED, OutputFile
from proxy.db import Database
from proxy.jobs.backends import Backend, BackendPool
from proxy.jobs.bus import EventBus
from proxy.jobs.dispatcher import Dispatcher
from proxy.jobs.models import Job
from proxy.jobs.service import JobService
from proxy.jobs.store import JobStore
from proxy.jobs.writer import JobWriter
from proxy.media.inputs import InputStore
from proxy.media.storage import OutputStore
from proxy.settings import REPO_ROOT, Settings
from proxy.workflows import load_registry

URL = "http://comfy-a:8188"
SMALL = {"width": 64, "height": 64, "length": 9, "steps": 4}
WAIT_S = 10.0


def db_error() -> OperationalError:
    return OperationalError("UPDATE jobs", {}, Exception("disk I/O error (injected)"))


class FakeSocket:
    """What the tracker and dispatcher use of `BackendSocket`, driven by the test."""

    def __init__(self, connected: bool = True) -> None:
        self.client_id = "test-client"
        self.state = SocketState.CONNECTED if connected else SocketState.DISCONNECTED
        self.last_error: str | None = None
        self.queue_remaining: int | None = 0
        self._subscribers: dict[str, set[asyncio.Queue[ComfyEvent]]] = {}
        self._connected = asyncio.Event()
        if connected:
            self._connected.set()

    @property
    def connected(self) -> bool:
        return self.state is SocketState.CONNECTED

    def subscribe(self, prompt_id: str) -> asyncio.Queue[ComfyEvent]:
        queue: asyncio.Queue[ComfyEvent] = asyncio.Queue()
        self._subscribers.setdefault(prompt_id, set()).add(queue)
        return queue

    def unsubscribe(self, prompt_id: str, queue: asyncio.Queue[ComfyEvent]) -> None:
        self._subscribers.get(prompt_id, set()).discard(queue)

    def emit(self, prompt_id: str, kind: str, **data: Any) -> None:
        for queue in self._subscribers.get(prompt_id, ()):
            queue.put_nowait(ComfyEvent(type=kind, data={"prompt_id": prompt_id, **data}))

    async def wait_connected(self, timeout_s: float) -> bool:
        try:
            await asyncio.wait_for(self._connected.wait(), timeout_s)
        except TimeoutError:
            return False
        return True

    def set_connected(self, up: bool) -> None:
        if up:
            self.state = SocketState.CONNECTED
            self._connected.set()
            return
        was = self.connected
        self.state = SocketState.DISCONNECTED
        self._connected.clear()
        if was:
            for queues in self._subscribers.values():
                for queue in queues:
                    queue.put_nowait(ComfyEvent(type=DISCONNECTED))


def success_entry(prompt_id: str) -> HistoryEntry:
    return HistoryEntry.parse(
        prompt_id,
        {
            "status": {"status_str": "success", "completed": True, "messages": []},
            "outputs": {"9": {"images": [{"filename": f"{prompt_id}.png", "type": "output"}]}},
        },
    )


class FakeComfy:
    """The HTTP side of one scripted ComfyUI (`ComfyClient`'s interface)."""

    def __init__(self, socket: FakeSocket) -> None:
        self.socket = socket
        self.submitted: list[str] = []
        self.withdrawn: list[str] = []
        self.running: list[str] = []
        self.pending: list[str] = []
        self.entries: dict[str, HistoryEntry] = {}
        # Hooks a test replaces; each receives what the real method would.
        self.on_submit: Callable[[str], Awaitable[None]] = self.run_now
        self.on_download: Callable[[OutputFile, Path], Awaitable[None]] | None = None

    async def run_now(self, prompt_id: str) -> None:
        """ComfyUI takes the prompt and runs it to success at once."""
        self.entries[prompt_id] = success_entry(prompt_id)
        self.socket.emit(prompt_id, "execution_start")
        self.socket.emit(prompt_id, "executing", node=None)

    async def submit(self, graph: dict[str, Any], *, client_id: str, prompt_id: str) -> None:
        self.submitted.append(prompt_id)
        await self.on_submit(prompt_id)

    async def queue(self) -> QueueState:
        return QueueState(running=list(self.running), pending=list(self.pending))

    async def history(self, prompt_id: str) -> HistoryEntry | None:
        return self.entries.get(prompt_id)

    async def delete_queued(self, prompt_ids: list[str]) -> None:
        self.withdrawn.extend(prompt_ids)

    async def interrupt(self, prompt_id: str) -> None:
        pass

    async def upload(self, path: Path, name: str) -> str:
        return name

    async def download(self, file: OutputFile, dest: Path) -> int:
        data = b"\x89PNG fake"
        await anyio.Path(dest).write_bytes(data)
        if self.on_download is not None:
            await self.on_download(file, dest)
        return len(data)


Predicate = Callable[[dict[str, Any]], bool]


class FaultyWriter(JobWriter):
    """The real writer, failing the updates an armed predicate matches (`times` each, or
    every time with None) with a database error."""

    def __init__(self, store: JobStore, bus: EventBus) -> None:
        super().__init__(store, bus)
        self.faults: list[list[Any]] = []
        self.raised = 0

    def fail(self, predicate: Predicate, times: int | None = 1) -> None:
        self.faults.append([predicate, times])

    async def update(self, job_id: str, **kw: Any) -> Job | None:
        for fault in self.faults:
            predicate, times = fault
            if (times is None or times > 0) and predicate(kw):
                if times is not None:
                    fault[1] = times - 1
                self.raised += 1
                raise db_error()
        return await super().update(job_id, **kw)


class FaultyStore(JobStore):
    """The real store; `fail_next_queued` makes the dispatch loop's first read fail."""

    def __init__(self, db: Database) -> None:
        super().__init__(db)
        self.next_queued_failures = 0

    async def claim_next(self, choose: Callable[[Job], str | None]) -> Job | None:
        if self.next_queued_failures > 0:
            self.next_queued_failures -= 1
            raise db_error()
        return await super().claim_next(choose)


class Harness:
    def __init__(self, tmp_path: Path, *, connected: bool = True, **settings: Any) -> None:
        self.settings = Settings(
            data_dir=tmp_path / "data",
            comfyui_urls=[URL],
            backend_down_timeout_s=settings.pop("backend_down_timeout_s", 5.0),
            no_backend_timeout_s=settings.pop("no_backend_timeout_s", 0.0),
            job_sweep_interval_s=settings.pop("job_sweep_interval_s", 0.05),
            job_stall_timeout_s=0.0,
            **settings,
        )
        self.socket = FakeSocket(connected)
        self.comfy = FakeComfy(self.socket)
        self.backend = Backend(name=URL, index=0, client=self.comfy, socket=self.socket)  # type: ignore[arg-type]
        self.pool = BackendPool([self.backend])

    async def __aenter__(self) -> Harness:
        s = self.settings
        for folder in (s.data_dir, s.outputs_path, s.uploads_path):
            folder.mkdir(parents=True, exist_ok=True)
        self.db = Database(s.db_url)
        await self.db.migrate()
        self.bus = EventBus()
        self.store = FaultyStore(self.db)
        self.writer = FaultyWriter(self.store, self.bus)
        self.outputs = OutputStore(s.outputs_path)
        await self.outputs.prepare()
        registry = load_registry(REPO_ROOT / "workflows")
        self.dispatcher = Dispatcher(
            settings=s,
            store=self.store,
            writer=self.writer,
            pool=self.pool,
            registry=registry,
            outputs=self.outputs,
        )
        # Quick backoffs and cooldowns: the behaviour under test, not the production pace.
        self.dispatcher.retry_min_s = 0.01
        self.dispatcher.retry_max_s = 0.05
        self.dispatcher.cooldown_s = 0.05
        self.jobs = JobService(
            settings=s,
            store=self.store,
            writer=self.writer,
            bus=self.bus,
            registry=registry,
            dispatcher=self.dispatcher,
            outputs=self.outputs,
            inputs=InputStore(self.db, s.uploads_path, s.max_upload_bytes),
        )
        return self

    async def start(self) -> None:
        await self.dispatcher.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.dispatcher.close()
        await self.db.close()

    async def create(self, prompt: str = "a test", *, start: bool = True) -> Job:
        return await self.jobs.create("fastwan_t2v", {"prompt": prompt, **SMALL}, start=start)

    async def wait(self, job_id: str, predicate: Callable[[Job], bool]) -> Job:
        return await self.bus.wait_for(job_id, predicate, lambda: self.store.get(job_id), WAIT_S)

    async def ended(self, job_id: str) -> Job:
        return await self.wait(job_id, lambda j: j.status.finished)

    def output_files(self) -> list[str]:
        return sorted(p.name for p in self.settings.outputs_path.iterdir() if p.is_file())

    async def backend_back(self) -> None:
        self.socket.set_connected(True)
        await self.dispatcher.on_backend_state(self.backend, SocketState.CONNECTED)

    async def backend_gone(self) -> None:
        self.socket.set_connected(False)
        await self.dispatcher.on_backend_state(self.backend, SocketState.DISCONNECTED)
