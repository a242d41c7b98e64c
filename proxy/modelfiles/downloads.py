"""The download manager: one tracked asyncio task per download, persisted records, resume.

Created and closed by the app lifespan. `start()` picks up downloads a stopped proxy left
queued or running (their `.part` files resume); `close()` cancels and awaits every task and
leaves their records queued for the next start. At most `max_concurrent` files transfer at
once; the rest wait as `queued`. Records are written at most every `progress_interval_s`,
and every write wakes `wait_for()`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable, Sequence
from contextlib import suppress
from pathlib import Path

import httpx
import huggingface_hub

from proxy.db import Database
from proxy.errors import Conflict, ProxyError
from proxy.modelfiles.manifest import (
    DEFAULT_MANIFEST_PATH,
    HuggingFaceSource,
    Manifest,
    ModelFile,
    load_manifest,
)
from proxy.modelfiles.store import (
    ACTIVE_STATUSES,
    DownloadRecord,
    DownloadStatus,
    DownloadStore,
    utcnow,
)
from proxy.modelfiles.transfer import DownloadFailed, Transfer, part_path
from proxy.settings import Settings

log = logging.getLogger("proxy.modelfiles")


class ModelsDirNotConfigured(ProxyError):
    """Neither MODELS_DIR nor COMFYUI_DIR is set, so there is nowhere to put model files."""

    status_code = 503


def target_dir(settings: Settings, folder: str) -> Path:
    """Where files of one ComfyUI models sub-folder go (MODELS_DIR, else COMFYUI_DIR/models)."""
    if settings.models_dir is not None:
        return Path(settings.models_dir) / folder
    if settings.comfyui_dir is not None:
        return Path(settings.comfyui_dir) / "models" / folder
    raise ModelsDirNotConfigured(
        "Nowhere to put model files: set MODELS_DIR (the ComfyUI models folder, e.g. "
        "/opt/ComfyUI/models) or COMFYUI_DIR (the ComfyUI install) and restart the proxy."
    )


def source_url(entry: ModelFile, settings: Settings) -> str:
    """The URL a file is fetched from; Hugging Face sources honour HF_ENDPOINT."""
    source = entry.source
    if isinstance(source, HuggingFaceSource):
        return huggingface_hub.hf_hub_url(
            source.repo,
            source.path,
            revision=source.revision,
            endpoint=settings.hf_endpoint.rstrip("/") if settings.hf_endpoint else None,
        )
    return source.url


class DownloadManager:
    """Starts, tracks, cancels and resumes model file downloads."""

    def __init__(
        self,
        database: Database,
        settings: Settings,
        client: httpx.AsyncClient,
        *,
        manifest: Manifest | None = None,
        manifest_path: Path = DEFAULT_MANIFEST_PATH,
        max_concurrent: int = 2,
        progress_interval_s: float = 0.5,
        retry_delays_s: Sequence[float] = (1, 2, 5, 10, 30),
        request_timeout: httpx.Timeout | None = None,
        replica: str | None = None,
        live_replicas: Callable[[], Awaitable[Sequence[str]]] | None = None,
    ) -> None:
        # Replicas: the downloads this one runs are those it queued, and those of replicas
        # that are gone (each writes into the MODELS_DIR of its own machine).
        self.replica = replica
        self._live_replicas = live_replicas
        self.settings = settings
        self.client = client
        self.store = DownloadStore(database)
        self._manifest = manifest
        self._manifest_path = manifest_path
        self._slots = asyncio.Semaphore(max_concurrent)
        self._progress_interval_s = progress_interval_s
        self._retry_delays_s = tuple(retry_delays_s)
        self._request_timeout = request_timeout
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._user_cancelled: set[str] = set()
        self._lock = asyncio.Lock()
        self._changed = asyncio.Event()
        self._started = False

    # -- lifecycle -------------------------------------------------------------------------

    @property
    def manifest(self) -> Manifest:
        if self._manifest is None:
            raise RuntimeError("DownloadManager.start() has not been awaited")
        return self._manifest

    async def start(self) -> None:
        """Load the manifest and resume downloads a previous run left unfinished."""
        if self._manifest is None:
            self._manifest = await asyncio.to_thread(load_manifest, self._manifest_path)
        self._started = True
        live = await self._live_replicas() if self._live_replicas is not None else ()
        pending = await self.store.requeue_running(self.replica, live)
        if pending:
            log.info("resuming %d model download(s)", len(pending))
        for record in pending:
            if record.id not in self._tasks:
                self._spawn(record)

    async def close(self) -> None:
        """Stop every download; their records stay queued and resume at the next start."""
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._started = False

    # -- the public operations -------------------------------------------------------------

    def target_path(self, entry: ModelFile) -> Path:
        return target_dir(self.settings, entry.folder) / entry.filename

    async def start_download(self, model_id: str) -> DownloadRecord:
        """Queue a download (or return the active one, or a completed one if already there)."""
        entry = self.manifest.get(model_id)
        target = self.target_path(entry)
        if not self._started:
            raise RuntimeError("DownloadManager.start() has not been awaited")
        async with self._lock:
            active = await self.store.list(model_id=model_id, statuses=ACTIVE_STATUSES, limit=1)
            if active:
                return active[0]
            present = await self._already_present(entry, target)
            if present is not None:
                return present
            record = await self.store.insert(
                runner=self.replica,
                model_id=entry.id,
                filename=entry.filename,
                folder=entry.folder,
                target_path=str(target),
                source_url=source_url(entry, self.settings),
                status=DownloadStatus.queued.value,
                bytes_total=entry.size_bytes,
            )
            self._spawn(record)
        self._notify()
        return record

    def files_for(self, name: str) -> list[str] | None:
        """The manifest ids a name stands for: every file a workflow needs, or one file by
        its id; None when the manifest knows neither."""
        if name in self.manifest.workflows:
            return [entry.id for entry in self.manifest.required_for(name)]
        return [name] if name in self.manifest.ids else None

    async def get(self, download_id: str) -> DownloadRecord:
        """One record; `NotFound` if there is no such download."""
        return await self.store.get(download_id)

    async def list(
        self, *, model_id: str | None = None, limit: int = 100, offset: int = 0
    ) -> list[DownloadRecord]:
        """Records, newest first, a page at a time."""
        return await self.store.list(model_id=model_id, limit=limit, offset=offset)

    async def count(self, *, model_id: str | None = None) -> int:
        """How many records `list` pages through."""
        return await self.store.count(model_id=model_id)

    async def latest_by_model(self) -> dict[str, DownloadRecord]:
        """The newest record per manifest id (ids never downloaded are absent)."""
        return await self.store.latest_by_model()

    async def cancel(self, download_id: str) -> DownloadRecord:
        """Stop a queued or running download and delete its partial file."""
        record = await self.store.get(download_id)
        if not record.active:
            raise Conflict(
                f"Download {download_id} is already {record.status.value}; only queued or "
                "running downloads can be cancelled.",
                status=record.status.value,
            )
        task = self._tasks.get(download_id)
        if task is None:
            # Nothing runs it in this process (another proxy, or not started): just record it.
            await self._finish(download_id, DownloadStatus.cancelled, phase=None)
        else:
            self._user_cancelled.add(download_id)
            task.cancel()
            await asyncio.wait([task])
        return await self.store.get(download_id)

    async def wait_for(
        self,
        download_id: str,
        statuses: Iterable[DownloadStatus | str] = (),
        timeout_s: float = 30.0,
        *,
        until: Callable[[DownloadRecord], bool] | None = None,
    ) -> DownloadRecord:
        """Wait until the record reaches one of `statuses` (or satisfies `until`).

        Woken by every record update this manager makes, never by polling; raises
        `TimeoutError` after `timeout_s`.
        """
        wanted = {DownloadStatus(s) for s in statuses}
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while True:
            changed = self._changed  # taken before reading, so no update slips between
            record = await self.store.get(download_id)
            if record.status in wanted or (until is not None and until(record)):
                return record
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise TimeoutError(
                    f"Download {download_id} is still {record.status.value} "
                    f"({record.phase or 'no phase'}, {record.bytes_done} bytes) "
                    f"after {timeout_s} s"
                )
            with suppress(TimeoutError):  # asyncio.timeout: wait_for may swallow a cancel
                async with asyncio.timeout(remaining):
                    await changed.wait()

    # -- internals -------------------------------------------------------------------------

    def _notify(self) -> None:
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    async def _update(self, download_id: str, **values: object) -> None:
        await self.store.update(download_id, **values)
        self._notify()

    async def _finish(self, download_id: str, status: DownloadStatus, **values: object) -> None:
        await self._update(download_id, status=status.value, finished_at=utcnow(), **values)

    async def _already_present(self, entry: ModelFile, target: Path) -> DownloadRecord | None:
        """A completed record when the target is there and trusted without re-hashing it.

        Without a known sha256 a matching size is enough. With one, the file must match a
        completed download of ours (same path, size and hash); anything else is verified by
        hashing in a task, so the request does not wait for gigabytes to be read.
        """
        try:
            stat = await asyncio.to_thread(target.stat)
        except FileNotFoundError:
            return None
        if entry.size_bytes is not None and stat.st_size != entry.size_bytes:
            return None
        completed = await self.store.list(
            model_id=entry.id, statuses=(DownloadStatus.completed,), limit=1
        )
        if completed:
            last = completed[0]
            if (
                last.target_path == str(target)
                and last.bytes_done == stat.st_size
                and (entry.sha256 is None or last.sha256 == entry.sha256)
            ):
                return last
        if entry.sha256 is not None:
            return None
        now = utcnow()
        return await self.store.insert(
            model_id=entry.id,
            filename=entry.filename,
            folder=entry.folder,
            target_path=str(target),
            source_url=source_url(entry, self.settings),
            status=DownloadStatus.completed.value,
            phase="already present",
            bytes_done=stat.st_size,
            bytes_total=stat.st_size,
            finished_at=now,
        )

    def _spawn(self, record: DownloadRecord) -> None:
        task = asyncio.create_task(self._run(record), name=f"model-download-{record.id}")
        self._tasks[record.id] = task

    async def _run(self, record: DownloadRecord) -> None:
        download_id = record.id
        try:
            async with self._slots:
                await self._transfer(record)
        except asyncio.CancelledError:
            await self._on_cancelled(record)
            raise
        except DownloadFailed as exc:
            log.warning(
                "model download %s (%s) failed: %s", download_id, record.filename, exc.message
            )
            await self._finish(
                download_id, DownloadStatus.failed, error=exc.message, speed_bytes_per_s=None
            )
        except Exception as exc:
            log.exception("model download %s (%s) crashed", download_id, record.filename)
            await self._finish(
                download_id,
                DownloadStatus.failed,
                error=f"Unexpected error: {type(exc).__name__}: {exc}",
                speed_bytes_per_s=None,
            )
        finally:
            self._tasks.pop(download_id, None)
            self._user_cancelled.discard(download_id)

    async def _transfer(self, record: DownloadRecord) -> None:
        current = await self.store.get(record.id)
        if current.status != DownloadStatus.queued:
            return
        try:
            entry = self.manifest.get(record.model_id)
        except ProxyError:
            raise DownloadFailed(
                f"{record.model_id!r} is no longer in the model manifest; nothing to resume."
            ) from None
        await self._update(
            record.id,
            status=DownloadStatus.running.value,
            phase="starting",
            error=None,
            finished_at=None,
        )

        headers: dict[str, str] = {}
        is_hf = isinstance(entry.source, HuggingFaceSource)
        if is_hf:
            # Reads env/token file and may refresh an OAuth token: keep it off the loop.
            token = await asyncio.to_thread(huggingface_hub.get_token)
            if token:
                headers["Authorization"] = f"Bearer {token}"

        async def report(phase: str, done: int, total: int | None, speed: float | None) -> None:
            await self._update(
                record.id, phase=phase, bytes_done=done, bytes_total=total, speed_bytes_per_s=speed
            )

        transfer = Transfer(
            self.client,
            url=record.source_url,
            target=Path(record.target_path),
            report=report,
            headers=headers,
            expected_size=entry.size_bytes,
            expected_sha256=entry.sha256,
            trust_linked_etag=is_hf,
            progress_interval_s=self._progress_interval_s,
            retry_delays_s=self._retry_delays_s,
            timeout=self._request_timeout,
        )
        result = await transfer.run()
        await self._finish(
            record.id,
            DownloadStatus.completed,
            phase="already present" if result.already_present else "done",
            bytes_done=result.size_bytes,
            bytes_total=result.size_bytes,
            sha256=result.sha256,
            error=None,
        )

    async def _on_cancelled(self, record: DownloadRecord) -> None:
        current = await self.store.get(record.id)
        if not current.active:
            return  # it finished (e.g. the rename won the race); leave the outcome alone
        if record.id in self._user_cancelled:
            part = part_path(Path(record.target_path))
            await asyncio.to_thread(part.unlink, missing_ok=True)
            await self._finish(
                record.id, DownloadStatus.cancelled, phase=None, speed_bytes_per_s=None
            )
        else:
            # Shutdown: keep the .part and the record, so the next start resumes it.
            await self._update(
                record.id,
                status=DownloadStatus.queued.value,
                phase="interrupted by shutdown; resumes at next start",
                speed_bytes_per_s=None,
            )
