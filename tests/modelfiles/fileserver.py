"""A tiny HTTP/1.1 file server on a loopback port that behaves like Hugging Face's CDN.

Serves `/{owner}/{repo}/resolve/{revision}/{path}` (and `/plain/{name}`) with Range support,
plus per-file misbehaviours the download code must survive: dropping the connection halfway,
ignoring Range, stalling halfway until released, answering 503 once, redirecting with an
`X-Linked-Etag` the way Hugging Face does for LFS files. Written on raw asyncio streams so a
dropped connection is exactly that.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field
from urllib.parse import unquote


@dataclass
class SeenRequest:
    method: str
    path: str
    headers: dict[str, str]


@dataclass
class ServedFile:
    data: bytes
    # "normal" | "drop_once" | "ignore_range" | "stall" | "fail_once" | "redirect" | "slow"
    mode: str = "normal"
    linked_etag: str | None = None
    served: int = 0
    # "stall": sent half and waiting; set `release` to send the rest.
    halfway: asyncio.Event = field(default_factory=asyncio.Event)
    release: asyncio.Event = field(default_factory=asyncio.Event)


class FileServer:
    def __init__(self) -> None:
        self.files: dict[str, ServedFile] = {}
        self.requests: list[SeenRequest] = []
        self._server: asyncio.Server | None = None
        self._handlers: set[asyncio.Task[None]] = set()
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def add(self, key: str, data: bytes, mode: str = "normal", **kw: object) -> ServedFile:
        """`key` is `owner/repo/path` for resolve URLs or `plain/name`."""
        served = ServedFile(data=data, mode=mode, **kw)  # type: ignore[arg-type]
        self.files[key] = served
        return served

    def requests_for(self, suffix: str) -> list[SeenRequest]:
        return [r for r in self.requests if r.path.endswith(suffix)]

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._handlers):
            task.cancel()
        await asyncio.gather(*self._handlers, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        try:
            await self._handle(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            self._handlers.discard(task)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        method, target, _version = lines[0].split(" ", 2)
        headers = {}
        for line in lines[1:]:
            if ":" in line:
                name, value = line.split(":", 1)
                headers[name.strip().lower()] = value.strip()
        path = unquote(target.split("?", 1)[0])
        self.requests.append(SeenRequest(method, path, headers))

        key, via_cdn = _key_for(path)
        served = self.files.get(key) if key else None
        if served is None:
            await _send(writer, 404, {}, b"Entry not found")
            return
        served.served += 1
        first = served.served == 1

        if served.mode == "redirect" and not via_cdn:
            extra = {"Location": f"/cdn/{key}", "X-Linked-Size": str(len(served.data))}
            if served.linked_etag:
                extra["X-Linked-Etag"] = f'"{served.linked_etag}"'
            await _send(writer, 302, extra, b"")
            return
        if served.mode == "fail_once" and first:
            await _send(writer, 503, {}, b"busy")
            return

        data = served.data
        start = 0
        status = 200
        extra: dict[str, str] = {}
        range_header = headers.get("range")
        if range_header and served.mode != "ignore_range":
            start = int(range_header.removeprefix("bytes=").split("-", 1)[0])
            if start >= len(data):
                await _send(writer, 416, {"Content-Range": f"bytes */{len(data)}"}, b"")
                return
            status = 206
            extra["Content-Range"] = f"bytes {start}-{len(data) - 1}/{len(data)}"
        body = data[start:]
        writer.write(_head(status, {**extra, "Content-Length": str(len(body))}))

        half = len(data) // 2
        if served.mode == "drop_once" and first:
            writer.write(body[: max(0, half - start)])
            await writer.drain()
            return  # closes the connection mid-body
        if served.mode == "stall" and first:
            writer.write(body[: max(0, half - start)])
            await writer.drain()
            served.halfway.set()
            await served.release.wait()
            writer.write(body[max(0, half - start) :])
        elif served.mode == "slow":
            for i in range(0, len(body), 8192):
                writer.write(body[i : i + 8192])
                await writer.drain()
                await asyncio.sleep(0.02)
        else:
            writer.write(body)
        await writer.drain()


def _key_for(path: str) -> tuple[str | None, bool]:
    parts = path.lstrip("/").split("/")
    if parts[0] == "cdn":
        return "/".join(parts[1:]), True
    if parts[0] == "plain":
        return path.lstrip("/"), False
    if len(parts) >= 5 and parts[2] == "resolve":
        return "/".join([parts[0], parts[1], *parts[4:]]), False
    return None, False


_REASONS = {
    200: "OK",
    206: "Partial Content",
    302: "Found",
    404: "Not Found",
    416: "Range Not Satisfiable",
    503: "Service Unavailable",
}


def _head(status: int, headers: dict[str, str]) -> bytes:
    lines = [
        f"HTTP/1.1 {status} {_REASONS[status]}",
        "Connection: close",
        "Accept-Ranges: bytes",
        *(f"{k}: {v}" for k, v in headers.items()),
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


async def _send(
    writer: asyncio.StreamWriter, status: int, headers: dict[str, str], body: bytes
) -> None:
    writer.write(_head(status, {**headers, "Content-Length": str(len(body))}) + body)
    await writer.drain()
