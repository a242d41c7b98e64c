"""Moving the bytes of one file: verify what is already there, resume, stream, check, rename.

Everything here is about one file and one URL; the manager owns records and tasks. Disk
work runs in worker threads (`asyncio.to_thread`) in batches, never on the event loop, and
the response body is streamed, never held whole. The file grows as `<target>.part` and is
renamed into place only after its size and checksum are verified.

Why not `huggingface_hub.hf_hub_download`: it is synchronous (a worker thread blocked on a
stalled read cannot be cancelled, and it sleeps between its own retries), it deletes its
partial file on any failure so nothing resumes after a restart, it checks sizes but not
sha256, and it writes under the repository's path inside `local_dir` with a metadata folder,
not at our target; it also cannot fetch the manifest's plain URL sources. huggingface_hub
still builds the URL and finds the token (see `downloads.py`).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import re
import shutil
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import httpx

log = logging.getLogger("proxy.modelfiles")

_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_CONTENT_RANGE = re.compile(r"^bytes\s+(?:(\d+)-(\d+)|\*)/(\d+|\*)$")
HASH_BLOCK_BYTES = 8 * 1024 * 1024

# report(phase, bytes_done, bytes_total, speed_bytes_per_s)
Reporter = Callable[[str, int, int | None, float | None], Awaitable[None]]


class DownloadFailed(Exception):
    """The download cannot finish; the message says why and what a person can do."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class _Retryable(Exception):
    """A transient failure (connection lost, 5xx): resume from the part file after a pause."""


@dataclass(frozen=True)
class TransferResult:
    size_bytes: int
    sha256: str
    already_present: bool


def format_bytes(n: int) -> str:
    value = float(n)
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if value < 1024 or unit == "TB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def part_path(target: Path) -> Path:
    return target.with_name(target.name + ".part")


def _write_batch(f: IO[bytes], chunks: list[bytes], hasher: Any) -> None:
    for chunk in chunks:
        f.write(chunk)
        hasher.update(chunk)


def _hash_block(f: IO[bytes], hasher: Any) -> int:
    block = f.read(HASH_BLOCK_BYTES)
    hasher.update(block)
    return len(block)


def _finalize(part: Path, target: Path) -> None:
    with part.open("rb+") as f:
        os.fsync(f.fileno())
    os.replace(part, target)


def _unlink(path: Path) -> None:
    path.unlink(missing_ok=True)


def _size_or_none(path: Path) -> int | None:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return None


def _linked_sha256(response: httpx.Response) -> str | None:
    """The sha256 Hugging Face announces for LFS files (`X-Linked-Etag` on the redirect)."""
    for r in (*response.history, response):
        etag: str | None = r.headers.get("x-linked-etag")
        if etag:
            value = etag.removeprefix("W/").strip('"').lower()
            if _SHA256.match(value):
                return value
    return None


class Transfer:
    """Put one file at `target`, resuming a `.part` left by an earlier attempt."""

    def __init__(
        self,
        client: httpx.AsyncClient,
        *,
        url: str,
        target: Path,
        report: Reporter,
        headers: dict[str, str] | None = None,
        expected_size: int | None = None,
        expected_sha256: str | None = None,
        trust_linked_etag: bool = False,
        progress_interval_s: float = 0.5,
        retry_delays_s: Sequence[float] = (1, 2, 5, 10, 30),
        write_batch_bytes: int = 8 * 1024 * 1024,
        timeout: httpx.Timeout | None = None,
    ) -> None:
        self.client = client
        self.url = url
        self.target = target
        self.part = part_path(target)
        self.report = report
        self.headers = {**(headers or {}), "Accept-Encoding": "identity"}
        self.expected_size = expected_size
        self.expected_sha256 = expected_sha256
        self.sha256_origin = "the manifest"
        self.trust_linked_etag = trust_linked_etag
        self.progress_interval_s = progress_interval_s
        self.retry_delays_s = tuple(retry_delays_s)
        self.write_batch_bytes = write_batch_bytes
        self.timeout = timeout or httpx.Timeout(60.0, connect=15.0)

        self.offset = 0  # bytes in the part file, all of them fed to `hasher`
        self.total: int | None = expected_size
        self.hasher = hashlib.sha256()
        self._last_report = 0.0
        self._last_bytes = 0
        self._speed: float | None = None

    # -- the whole run ---------------------------------------------------------------------

    async def run(self) -> TransferResult:
        try:
            await asyncio.to_thread(self.target.parent.mkdir, parents=True, exist_ok=True)
        except OSError as exc:
            raise DownloadFailed(
                f"Cannot create the folder {self.target.parent}: {exc.strerror}"
            ) from None
        existing = await self._verify_existing()
        if existing is not None:
            return existing
        await self._resume_part()

        failures = 0
        restarts = 0
        while True:
            before = self.offset
            try:
                if await self._fetch_once():
                    break
                restarts += 1
                if restarts > 3:
                    raise DownloadFailed(
                        f"{self.url} keeps answering ranges that do not match the request; "
                        "giving up."
                    )
                continue
            except _Retryable as exc:
                failures = 1 if self.offset > before else failures + 1
                if failures > len(self.retry_delays_s):
                    raise DownloadFailed(
                        f"{exc} Gave up after {failures} attempts; the partial file "
                        f"({format_bytes(self.offset)}) is kept, so starting the download "
                        "again resumes it."
                    ) from None
                delay = self.retry_delays_s[failures - 1]
                log.warning(
                    "download of %s interrupted (%s); retrying in %ss", self.target.name, exc, delay
                )
                await self.report(f"retrying in {delay:g} s: {exc}", self.offset, self.total, None)
                await asyncio.sleep(delay)

        return await self._check_and_rename()

    # -- before transferring ---------------------------------------------------------------

    async def _verify_existing(self) -> TransferResult | None:
        size = await asyncio.to_thread(_size_or_none, self.target)
        if size is None:
            return None
        where = f"A different file already exists at {self.target}"
        fix = "Move or delete it, then start the download again."
        if self.expected_size is not None and size != self.expected_size:
            raise DownloadFailed(
                f"{where} ({format_bytes(size)}, expected {self.expected_size} bytes). {fix}"
            )
        hasher = hashlib.sha256()
        await self._hash_file(self.target, hasher, size, "verifying existing file")
        digest = hasher.hexdigest()
        if self.expected_sha256 is not None and digest != self.expected_sha256:
            raise DownloadFailed(
                f"{where} (sha256 {digest}, expected {self.expected_sha256}). {fix}"
            )
        return TransferResult(size_bytes=size, sha256=digest, already_present=True)

    async def _resume_part(self) -> None:
        size = await asyncio.to_thread(_size_or_none, self.part)
        if not size:
            return
        if self.expected_size is not None and size > self.expected_size:
            log.warning("%s is larger than the expected file; starting over", self.part)
            await asyncio.to_thread(_unlink, self.part)
            return
        await self._hash_file(self.part, self.hasher, size, "checking partial download")
        self.offset = size

    async def _hash_file(self, path: Path, hasher: Any, size: int, phase: str) -> None:
        await self.report(phase, 0, size, None)
        done = 0
        last = time.monotonic()
        f = await asyncio.to_thread(path.open, "rb")
        try:
            while n := await asyncio.to_thread(_hash_block, f, hasher):
                done += n
                if time.monotonic() - last >= self.progress_interval_s:
                    last = time.monotonic()
                    await self.report(phase, done, size, None)
        finally:
            await asyncio.to_thread(f.close)

    async def _reset_part(self) -> None:
        await asyncio.to_thread(_unlink, self.part)
        self.offset = 0
        self.hasher = hashlib.sha256()

    # -- one HTTP request ------------------------------------------------------------------

    async def _fetch_once(self) -> bool:
        """Stream once from `offset`. True when the body is complete, False to ask again."""
        headers = dict(self.headers)
        if self.offset > 0:
            headers["Range"] = f"bytes={self.offset}-"
        host = httpx.URL(self.url).host
        try:
            async with self.client.stream(
                "GET", self.url, headers=headers, follow_redirects=True, timeout=self.timeout
            ) as response:
                return await self._consume(response)
        except httpx.TransportError as exc:
            detail = str(exc) or type(exc).__name__
            raise _Retryable(f"The connection to {host} failed: {detail}.") from None
        except (httpx.TooManyRedirects, httpx.InvalidURL) as exc:
            raise DownloadFailed(f"Cannot fetch {self.url}: {exc}") from None

    async def _consume(self, response: httpx.Response) -> bool:
        status = response.status_code
        if status == 416 and self.offset > 0:
            total = _content_range(response.headers.get("content-range"))[2]
            if total is not None and total == self.offset:
                self.total = total
                return True
            log.warning("%s refused to resume at %d; starting over", self.url, self.offset)
            await self._reset_part()
            return False
        self._raise_for_status(response)

        if status == 206:
            start, _end, total = _content_range(response.headers.get("content-range"))
            if start != self.offset:
                log.warning("%s answered a different range; starting over", self.url)
                await self._reset_part()
                return False
        elif status == 200:
            if self.offset > 0:
                log.info("%s ignored the Range header; downloading from the start", self.url)
                await self._reset_part()
            length = response.headers.get("content-length")
            total = int(length) if length and length.isdigit() else None
        else:
            raise DownloadFailed(f"Unexpected HTTP {status} from {self.url}.")

        if self.expected_size is not None and total is not None and total != self.expected_size:
            raise DownloadFailed(
                f"The source {self.url} serves {total} bytes, but the manifest expects "
                f"{self.expected_size}. The file upstream may have changed; update "
                "size_bytes and sha256 in comfyui/models.json."
            )
        if self.expected_size is None and total is not None:
            self.total = total
        if self.expected_sha256 is None and self.trust_linked_etag:
            linked = _linked_sha256(response)
            if linked:
                self.expected_sha256 = linked
                self.sha256_origin = "Hugging Face's X-Linked-Etag"
        await self._check_disk_space()
        await self._stream_body(response)

        if self.total is not None and self.offset < self.total:
            raise _Retryable(f"The connection closed early at {self.offset} of {self.total} bytes.")
        return True

    def _raise_for_status(self, response: httpx.Response) -> None:
        status = response.status_code
        if status < 400:
            return
        if status == 404:
            raise DownloadFailed(
                f"{self.target.name} was not found at {self.url} (HTTP 404). Check the "
                "repository, path and revision in comfyui/models.json."
            )
        if status in (401, 403):
            raise DownloadFailed(
                f"Access to {self.url} was denied (HTTP {status}). If the repository is "
                "gated, accept its terms on huggingface.co and log in (`hf auth login`) or "
                "set HF_TOKEN, then start the download again."
            )
        if status == 429 or status >= 500:
            raise _Retryable(f"The source answered HTTP {status} for {self.url}.")
        raise DownloadFailed(f"The source answered HTTP {status} for {self.url}.")

    async def _check_disk_space(self) -> None:
        if self.total is None:
            return
        needed = self.total - self.offset
        free = (await asyncio.to_thread(shutil.disk_usage, self.target.parent)).free
        if free < needed:
            raise DownloadFailed(
                f"Not enough disk space in {self.target.parent}: {format_bytes(needed)} "
                f"needed, {format_bytes(free)} free."
            )

    async def _stream_body(self, response: httpx.Response) -> None:
        mode = "ab" if self.offset > 0 else "wb"
        try:
            f = await asyncio.to_thread(self.part.open, mode)
        except OSError as exc:
            raise DownloadFailed(f"Cannot write {self.part}: {exc.strerror}") from None
        pending: list[bytes] = []
        pending_bytes = 0
        self._start_speed_window()
        try:
            # No chunk_size: httpx would hold a partial chunk back and lose it on a drop.
            async for chunk in response.aiter_bytes():
                pending.append(chunk)
                pending_bytes += len(chunk)
                received = self.offset + pending_bytes
                if self.total is not None and received > self.total:
                    raise DownloadFailed(
                        f"{self.url} sent more than the expected {self.total} bytes."
                    )
                if pending_bytes >= self.write_batch_bytes:
                    await self._write(f, pending)
                    pending, pending_bytes = [], 0
                await self._maybe_report(received)
        finally:
            # Keep every byte received so far, so a retry or a restart resumes after it.
            try:
                if pending:
                    await self._write(f, pending)
            finally:
                await asyncio.to_thread(f.close)
        await self._maybe_report(self.offset, force=True)

    async def _write(self, f: IO[bytes], chunks: list[bytes]) -> None:
        try:
            await asyncio.to_thread(_write_batch, f, chunks, self.hasher)
        except OSError as exc:
            raise DownloadFailed(f"Cannot write {self.part}: {exc.strerror}") from None
        self.offset += sum(len(c) for c in chunks)

    # -- progress --------------------------------------------------------------------------

    def _start_speed_window(self) -> None:
        self._last_report = time.monotonic()
        self._last_bytes = self.offset

    async def _maybe_report(self, received: int, *, force: bool = False) -> None:
        now = time.monotonic()
        elapsed = now - self._last_report
        if not force and elapsed < self.progress_interval_s:
            return
        if elapsed > 0 and received >= self._last_bytes:
            current = (received - self._last_bytes) / elapsed
            # Smooth a little so the ETA does not jump with every burst.
            self._speed = current if self._speed is None else 0.5 * current + 0.5 * self._speed
        self._last_report = now
        self._last_bytes = received
        await self.report("downloading", received, self.total, self._speed)

    # -- after transferring ----------------------------------------------------------------

    async def _check_and_rename(self) -> TransferResult:
        size = self.offset
        if self.total is not None and size != self.total:
            await self._reset_part()
            raise DownloadFailed(
                f"{self.target.name} is {size} bytes, expected {self.total}. The partial "
                "file was deleted; start the download again."
            )
        await self.report("verifying", size, self.total or size, None)
        digest = self.hasher.hexdigest()
        if self.expected_sha256 is not None and digest != self.expected_sha256:
            await self._reset_part()
            raise DownloadFailed(
                f"Checksum mismatch for {self.target.name}: expected sha256 "
                f"{self.expected_sha256} (from {self.sha256_origin}), got {digest}. The "
                "partial file was deleted; start the download again, and if it fails the "
                "same way, check the source and the manifest."
            )
        try:
            await asyncio.to_thread(_finalize, self.part, self.target)
        except OSError as exc:
            raise DownloadFailed(
                f"Cannot move {self.part} to {self.target}: {exc.strerror}"
            ) from None
        return TransferResult(size_bytes=size, sha256=digest, already_present=False)


def _content_range(value: str | None) -> tuple[int | None, int | None, int | None]:
    """`bytes 100-199/1000` → (100, 199, 1000); `bytes */1000` → (None, None, 1000)."""
    match = _CONTENT_RANGE.match((value or "").strip())
    if not match:
        return None, None, None
    start, end, total = match.groups()
    return (
        int(start) if start is not None else None,
        int(end) if end is not None else None,
        int(total) if total and total != "*" else None,
    )
