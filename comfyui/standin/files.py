"""``GET /view`` and ``POST /upload/image``, with ComfyUI's path rules and answers.

``/view``: 400 for an empty name, a name starting with ``/`` or containing ``..``, or an
unknown ``type``; 403 for a subfolder outside the type's folder; 404 for a missing file. Files
are served with aiohttp's FileResponse (Range, ETag, conditional requests), the guessed
Content-Type and ``Content-Disposition: filename="..."``.

``/upload/image`` takes any file. Same name and same content returns the existing name;
different content gets ``"stem (1).ext"``, ``"stem (2).ext"``, ...
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import mimetypes
import os
import shutil
from collections.abc import Mapping
from typing import IO, TYPE_CHECKING, Any

from aiohttp import web
from PIL import Image

from .paths import DataDirs

if TYPE_CHECKING:
    from .server import StandinServer

_FORCED_DOWNLOAD = {
    "text/html",
    "text/html-sandboxed",
    "application/xhtml+xml",
    "text/javascript",
    "text/css",
}


def file_routes(server: StandinServer) -> list[tuple[str, str, Any]]:
    """(method, path, handler) of the file routes; each is also served under /api."""
    dirs = server.dirs

    async def view(request: web.Request) -> web.StreamResponse:
        status, path = await asyncio.to_thread(_resolve_view, dirs, request.query)
        if path is None:
            return web.Response(status=status)
        query = request.query
        filename = os.path.basename(path)
        disposition = {"Content-Disposition": f'filename="{filename}"'}
        if "preview" in query:
            body, content_type = await asyncio.to_thread(_preview, path, query["preview"])
            return web.Response(body=body, content_type=content_type, headers=disposition)
        channel = query.get("channel", "rgba")
        if channel in ("rgb", "a"):
            body = await asyncio.to_thread(_channel_png, path, channel)
            return web.Response(body=body, content_type="image/png", headers=disposition)
        content_type = mimetypes.guess_type(filename)[0] or "application/octet-stream"
        if content_type in _FORCED_DOWNLOAD:
            content_type = "application/octet-stream"
        return web.FileResponse(path, headers={**disposition, "Content-Type": content_type})

    async def upload_image(request: web.Request) -> web.Response:
        post = await request.post()
        upload_type = post.get("type")
        if upload_type is None:
            upload_type = "input"
        folder = dirs.directory_by_type(str(upload_type))
        if upload_type not in ("input", "temp", "output") or folder is None:
            raise web.HTTPInternalServerError(text="unknown upload type")
        image = post.get("image")
        if not isinstance(image, web.FileField) or not image.filename:
            return web.Response(status=400)
        subfolder = str(post.get("subfolder", ""))
        overwrite = post.get("overwrite") in ("true", "1")
        name = await asyncio.to_thread(
            _store_upload, image.file, folder, subfolder, image.filename, overwrite
        )
        if name is None:
            return web.Response(status=400)
        return web.json_response({"name": name, "subfolder": subfolder, "type": upload_type})

    return [
        ("GET", "/view", view),
        ("POST", "/upload/image", upload_image),
    ]


def _sha256_file(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _sha256_stream(stream: IO[bytes]) -> str:
    digest = hashlib.sha256()
    stream.seek(0)
    for block in iter(lambda: stream.read(1 << 20), b""):
        digest.update(block)
    stream.seek(0)
    return digest.hexdigest()


def _resolve_view(dirs: DataDirs, query: Mapping[str, str]) -> tuple[int, str | None]:
    """(200, path) of the file ``/view`` serves, or (error status, None)."""
    if "filename" not in query:
        return 404, None
    filename, folder = dirs.split_annotation(query["filename"])
    if not filename:
        return 400, None
    if filename[0] == "/" or ".." in filename:
        return 400, None
    if folder is None:
        folder = dirs.directory_by_type(query.get("type", "output"))
    if folder is None:
        return 400, None
    if "subfolder" in query:
        full = os.path.join(folder, query["subfolder"])
        if os.path.commonpath((os.path.abspath(full), folder)) != folder:
            return 403, None
        folder = full
    path = os.path.join(folder, os.path.basename(filename))
    if not os.path.isfile(path):
        return 404, None
    return 200, path


def _store_upload(
    stream: IO[bytes], base: str, subfolder: str, filename: str, overwrite: bool
) -> str | None:
    """Write the upload (unless an identical file already has the name); the final name.

    None when the target would lie outside ``base``.
    """
    folder = os.path.join(base, os.path.normpath(subfolder))
    if os.path.commonpath((base, os.path.abspath(os.path.join(folder, filename)))) != base:
        return None
    os.makedirs(folder, exist_ok=True)
    stem, ext = os.path.splitext(filename)
    path = os.path.join(folder, filename)
    if not overwrite:
        attempt = 1
        upload_hash = None
        while os.path.exists(path):
            upload_hash = upload_hash or _sha256_stream(stream)
            if _sha256_file(path) == upload_hash:
                return filename
            filename = f"{stem} ({attempt}){ext}"
            path = os.path.join(folder, filename)
            attempt += 1
    stream.seek(0)
    with open(path, "wb") as out:
        shutil.copyfileobj(stream, out)
    return filename


def _preview(path: str, spec: str) -> tuple[bytes, str]:
    fmt, _, quality = spec.partition(";")
    fmt = fmt if fmt in ("webp", "jpeg") else "webp"
    with Image.open(path) as image:
        out = io.BytesIO()
        picture = image.convert("RGB") if fmt == "jpeg" else image
        picture.save(out, format=fmt, quality=int(quality or 90))
    return out.getvalue(), f"image/{fmt}"


def _channel_png(path: str, channel: str) -> bytes:
    with Image.open(path) as image:
        if channel == "rgb":
            picture = image.convert("RGB")
        else:
            rgba = image.convert("RGBA") if image.mode != "RGBA" else image
            alpha = rgba.getchannel("A")
            picture = Image.new("RGBA", image.size)
            picture.putalpha(alpha)
        out = io.BytesIO()
        picture.save(out, format="PNG")
    return out.getvalue()
