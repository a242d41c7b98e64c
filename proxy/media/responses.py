"""How a stored output is answered over HTTP when it lives in an object store, not on disk.

- **redirect** (the default): a GET is answered 307 with a presigned URL of the object, so
  the bytes go from the store to the client directly; the client repeats its Range header
  there and the store answers it. A HEAD is answered here, from what HEAD of the object said
  (a presigned URL is good for one method only).
- **stream** (S3_PROXY_DOWNLOADS): the bytes pass through the proxy, read from the store as
  they are sent. One byte range is served as 206 with Content-Range; a range past the end is
  416 with `Content-Range: bytes */size`; If-Range is honoured. Several ranges in one request
  are answered with the whole file (200), as RFC 9110 allows.

Errors of the store before the first byte is sent are raised, so the app's handlers answer
them like any other (a 502/503 that names the store); a failure mid-stream can only cut the
connection short, which the client sees as a short body.
"""

from __future__ import annotations

import logging
from datetime import UTC
from email.utils import format_datetime
from typing import Literal

from starlette.datastructures import Headers
from starlette.responses import FileResponse, PlainTextResponse, RedirectResponse, Response
from starlette.types import Receive, Scope, Send

from proxy.media.storage import StoredFile, StoreError

log = logging.getLogger("proxy.media")

CHUNK_BYTES = 1024 * 1024

Unsatisfiable = Literal["unsatisfiable"]


class MalformedRange(ValueError):
    pass


def parse_range(header: str, size: int) -> tuple[int, int] | Unsatisfiable | None:
    """The one byte range (first, last; inclusive) a Range header asks of `size` bytes;
    None to answer with the whole file (several ranges); "unsatisfiable" when no range
    asked for lies within the file. MalformedRange when it is not a byte range header."""
    units, sep, spec = header.partition("=")
    if not sep or units.strip().lower() != "bytes":
        raise MalformedRange("Only byte ranges are supported (Range: bytes=first-last)")
    ranges: list[tuple[int, int]] = []
    for part in spec.split(","):
        first_text, dash, last_text = part.strip().partition("-")
        first_text, last_text = first_text.strip(), last_text.strip()
        if not dash or not (first_text.isdigit() or (not first_text and last_text.isdigit())):
            raise MalformedRange(f"Malformed range {part.strip()!r}")
        if last_text and not last_text.isdigit():
            raise MalformedRange(f"Malformed range {part.strip()!r}")
        if not first_text:  # a suffix: the last N bytes
            length = int(last_text)
            if length and size:
                ranges.append((max(0, size - length), size - 1))
            continue
        first = int(first_text)
        if last_text and int(last_text) < first:
            raise MalformedRange(f"Malformed range {part.strip()!r} (its end is before its start)")
        last = int(last_text) if last_text else size - 1
        if first < size:
            ranges.append((first, min(last, size - 1)))
    if not ranges:
        return "unsatisfiable"
    ranges.sort()
    merged = [ranges[0]]
    for first, last in ranges[1:]:
        if first <= merged[-1][1] + 1:
            merged[-1] = (merged[-1][0], max(merged[-1][1], last))
        else:
            merged.append((first, last))
    return merged[0] if len(merged) == 1 else None


class StoredObjectResponse(FileResponse):
    """A stored file kept in an object store, answered as the module docstring says.

    A FileResponse by type, like the local files routes answer with, but it never touches a
    local path: its `__call__` is its own."""

    chunk_size = CHUNK_BYTES

    def __init__(self, file: StoredFile, *, inline: bool) -> None:
        assert file.remote is not None and file.size_bytes is not None
        # FileResponse's own set-up gives the Content-Type, Content-Disposition and
        # Accept-Ranges headers; the "path" is only the name (nothing reads it).
        super().__init__(
            file.name,
            media_type=file.content_type,
            filename=file.name,
            content_disposition_type="inline" if inline else "attachment",
        )
        self.file = file
        self.inline = inline
        self.headers["content-length"] = str(file.size_bytes)
        if file.etag:
            self.headers["etag"] = file.etag
        if file.modified is not None:
            modified = file.modified.astimezone(UTC)  # botocore's is dateutil's UTC
            self.headers["last-modified"] = format_datetime(modified, usegmt=True)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self._answer(scope, receive, send)
        if self.background is not None:
            await self.background()

    async def _answer(self, scope: Scope, receive: Receive, send: Send) -> None:
        assert self.file.remote is not None and self.file.size_bytes is not None
        if scope.get("method", "GET").upper() == "HEAD":
            await self._send_headers(send, 200, self.raw_headers, more_body=False)
            return
        if not self.file.remote.proxy_downloads:
            url = await self.file.remote.presigned_url(self.file, inline=self.inline)
            # Temporary (307): the URL expires; the proxy's own URL stays the one to keep.
            redirect = RedirectResponse(url, status_code=307, headers={"Cache-Control": "no-store"})
            await redirect(scope, receive, send)
            return
        size = self.file.size_bytes
        headers = Headers(scope=scope)
        wanted: tuple[int, int] | Unsatisfiable | None = None
        if "range" in headers and self._range_applies(headers.get("if-range")):
            try:
                wanted = parse_range(headers["range"], size)
            except MalformedRange as exc:
                await PlainTextResponse(str(exc), status_code=400)(scope, receive, send)
                return
        if wanted == "unsatisfiable":
            refused = Response(status_code=416, headers={"Content-Range": f"bytes */{size}"})
            await refused(scope, receive, send)
            return
        if wanted is None:
            await self._stream(send, 200, 0, None)
        else:
            await self._stream(send, 206, *wanted)

    async def _stream(self, send: Send, status: int, first: int, last: int | None) -> None:
        """Bytes `first` to `last` (None: the end) of the object, as they come from the store."""
        assert self.file.remote is not None
        stream = await self.file.remote.open_stream(self.file, first, last)
        try:
            raw = [(k, v) for k, v in self.raw_headers if k != b"content-length"]
            raw.append((b"content-length", str(stream.length).encode()))
            if status == 206:
                span = f"bytes {first}-{first + stream.length - 1}/{self.file.size_bytes}"
                raw.append((b"content-range", span.encode()))
            await self._send_headers(send, status, raw, more_body=stream.length > 0)
            left = stream.length
            while left > 0:
                try:
                    chunk = await stream.read(min(self.chunk_size, left))
                    if not chunk:
                        raise StoreError(f"{self.file.name} ended {left} bytes early in the store")
                except StoreError as exc:
                    log.warning("download of %s cut short: %s", self.file.name, exc.message)
                    raise
                left -= len(chunk)
                await send({"type": "http.response.body", "body": chunk, "more_body": left > 0})
        finally:
            await stream.aclose()

    def _range_applies(self, if_range: str | None) -> bool:
        if if_range is None:
            return True
        if if_range.startswith("W/"):
            return False
        return if_range in (self.headers.get("etag"), self.headers.get("last-modified"))

    @staticmethod
    async def _send_headers(
        send: Send, status: int, raw: list[tuple[bytes, bytes]], *, more_body: bool
    ) -> None:
        await send({"type": "http.response.start", "status": status, "headers": raw})
        if not more_body:
            await send({"type": "http.response.body", "body": b"", "more_body": False})
