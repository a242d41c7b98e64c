"""Uploaded inputs (the image of image-to-video, the video of video-to-video).

A multipart body is parsed as it arrives: each file part is written straight to disk under
`max_upload_bytes`, its type is decided by its first bytes (never by its name or
Content-Type), and it is decoded once (Pillow / PyAV, in a worker thread) before anything
uses it. It is stored under a generated name, `<uuid><ext of the detected type>`; the client's
file name is kept as metadata only. Every failure removes what was written.

    receive_form(chunks, content_type, expect={"image": "image"}, ...) -> ReceivedForm
        .fields  the text fields, as sent
        .files   {field: record}; a record is what `Job.inputs[param]` holds:
                 {"stored", "upload_name", "original_name", "content_type", "size_bytes",
                  "kind", "format", "width", "height", "frames", "fps"}

The parser is python-multipart's low-level `MultipartParser`, not `streaming-form-data`. That
library's async targets would keep disk writes off the loop, but it cannot tell a complete body
from one cut short between parts (its end state is private) and silently drops a part with no
Content-Disposition. Its parts are routed by pre-registered name, and a catch-all target is never
told the name, so free-form text fields and "unexpected file field <name>" would need a hack.
"""

from __future__ import annotations

import asyncio
import logging
import unicodedata
import uuid
from collections.abc import AsyncIterable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import anyio
import av
from PIL import Image
from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, parse_options_header

from proxy.errors import InvalidInput, PayloadTooLarge

if TYPE_CHECKING:  # the callbacks' TypedDict exists for type checkers only
    from python_multipart.multipart import MultipartCallbacks

log = logging.getLogger("proxy.uploads")

MediaKind = Literal["image", "video"]

# Enough leading bytes to recognise every supported container (EBML's DocType included).
SNIFF_BYTES = 64
# Text fields are prompts and numbers; anything longer is a mistake or an attack.
MAX_FIELD_BYTES = 64 * 1024
MAX_FIELDS = 64
# Twice the largest frame the workflows make (2048x2048) on each side; checked from the
# header, before a pixel is decoded, so a small file that decodes huge costs nothing.
MAX_IMAGE_PIXELS = 4096 * 4096


@dataclass(frozen=True)
class MediaType:
    """A file type we accept, as recognised from its bytes."""

    kind: MediaKind
    label: str
    ext: str
    content_type: str
    decoder: str  # Pillow format name, or FFmpeg demuxer name


JPEG = MediaType("image", "JPEG", ".jpg", "image/jpeg", "JPEG")
PNG = MediaType("image", "PNG", ".png", "image/png", "PNG")
WEBP = MediaType("image", "WebP", ".webp", "image/webp", "WEBP")
MP4 = MediaType("video", "MP4", ".mp4", "video/mp4", "mov")
MOV = MediaType("video", "QuickTime MOV", ".mov", "video/quicktime", "mov")
WEBM = MediaType("video", "WebM", ".webm", "video/webm", "matroska")
MKV = MediaType("video", "Matroska", ".mkv", "video/x-matroska", "matroska")
AVI = MediaType("video", "AVI", ".avi", "video/x-msvideo", "avi")

ACCEPTED: dict[MediaKind, str] = {"image": "JPEG, PNG or WebP", "video": "MP4, MOV, WebM or AVI"}
WITH_ARTICLE: dict[MediaKind, str] = {"image": "an image", "video": "a video"}

# ISO-BMFF brands that are still images (HEIF/AVIF), not videos, despite the `ftyp` box.
_IMAGE_BRANDS = {b"heic", b"heix", b"heim", b"heis", b"hevc", b"mif1", b"msf1", b"avif", b"avis"}


def sniff(head: bytes) -> MediaType | None:
    """The type of a file from its first bytes (None when it is none we accept)."""
    if head.startswith(b"\xff\xd8\xff"):
        return JPEG
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return PNG
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return WEBP
    if head[:4] == b"RIFF" and head[8:12] == b"AVI ":
        return AVI
    if head[4:8] == b"ftyp" and len(head) >= 12:
        brand = head[8:12]
        if brand in _IMAGE_BRANDS:
            return None
        return MOV if brand == b"qt  " else MP4
    if head.startswith(b"\x1a\x45\xdf\xa3"):
        if b"webm" in head:
            return WEBM
        if b"matroska" in head:
            return MKV
    return None


def describe(head: bytes) -> str:
    """A short guess at what an unsupported file is, for the error message."""
    media = sniff(head)
    if media is not None:
        return f"a {media.label} {media.kind}"
    if head[4:8] == b"ftyp":
        return "a HEIF/AVIF image"
    if head.startswith((b"GIF87a", b"GIF89a")):
        return "a GIF"
    if head.startswith(b"%PDF"):
        return "a PDF"
    if head and all(32 <= b < 127 or b in (9, 10, 13) for b in head):
        return "text"
    return "not a recognised image or video"


def safe_display_name(name: str | None) -> str | None:
    """The client's file name reduced to something safe to show (never used as a path)."""
    if not name:
        return None
    base = name.replace("\\", "/").rsplit("/", 1)[-1]
    base = "".join(c for c in base if unicodedata.category(c)[0] != "C").strip()
    return base[:200] if base not in ("", ".", "..") else None


def human_bytes(n: int) -> str:
    """`104857600` → `100 MB`."""
    if n < 1024:
        return f"{n} bytes"
    value = float(n)
    for unit in ("KB", "MB", "GB"):
        value /= 1024
        if value < 1024 or unit == "GB":
            break
    return f"{value:.1f}".removesuffix(".0") + f" {unit}"


# -- decoding (worker thread) ---------------------------------------------------------------


def _inspect_image(path: Path, media: MediaType) -> dict[str, Any]:
    with Image.open(path, formats=[media.decoder]) as img:
        width, height = img.size
        if width * height > MAX_IMAGE_PIXELS:
            raise ValueError(
                f"{width}x{height} is more pixels than this server accepts "
                f"(at most {MAX_IMAGE_PIXELS // 1_000_000} megapixels, such as 4096x4096)"
            )
        img.load()
        return {"width": width, "height": height}


def _inspect_video(path: Path, media: MediaType) -> dict[str, Any]:
    with av.open(str(path), format=media.decoder) as container:
        if not container.streams.video:
            raise ValueError("it has no video stream")
        stream = container.streams.video[0]
        first = next(iter(container.decode(stream)), None)
        if first is None:
            raise ValueError("no frame could be decoded")
        fps = float(stream.average_rate) if stream.average_rate else None
        return {
            "width": first.width,
            "height": first.height,
            # Container metadata: exact for MP4/MOV/AVI, unknown (None) for WebM.
            "frames": int(stream.frames) or None,
            "fps": round(fps, 3) if fps else None,
        }


def inspect_sync(path: Path, media: MediaType) -> dict[str, Any]:
    """Decode the file enough to prove it is what its bytes claim; its size, frames, fps.

    Raises ValueError with a reason a person can read.
    """
    try:
        if media.kind == "image":
            return _inspect_image(path, media)
        return _inspect_video(path, media)
    except (OSError, SyntaxError, av.FFmpegError, Image.DecompressionBombError) as exc:
        # Decoders name the file they read: that is a path on this server, never shown.
        text = (str(exc) or "unreadable").replace(str(path), "the file").replace(path.name, "")
        raise ValueError(text.replace("''", "").strip(" :")) from exc


# -- one file part ----------------------------------------------------------------------------


class _FileWriter:
    """One file part on its way to disk: size limit, type check, decode check, final name."""

    def __init__(
        self,
        field_name: str,
        kind: MediaKind,
        original: str | None,
        directory: Path,
        max_bytes: int,
    ) -> None:
        self.field = field_name
        self.kind = kind
        self.original = safe_display_name(original)
        self.directory = directory
        self.max_bytes = max_bytes
        self.token = uuid.uuid4().hex
        self.part = directory / f"{self.token}.part"
        self.final: Path | None = None
        self.size = 0
        self.head = b""
        self.media: MediaType | None = None
        self._handle: Any = None

    async def open(self) -> None:
        # Opened here, not in a thread: a cancelled threaded open would leak the file.
        self._handle = anyio.wrap_file(open(self.part, "xb"))  # noqa: ASYNC230

    async def write(self, data: bytes) -> None:
        self.size += len(data)
        if self.size > self.max_bytes:
            raise PayloadTooLarge(
                f"{self.field}: the file is larger than the upload limit of "
                f"{human_bytes(self.max_bytes)} ({self.max_bytes} bytes)",
                field=self.field,
                max_upload_bytes=self.max_bytes,
            )
        if self.media is None:
            self.head = (self.head + data)[:SNIFF_BYTES]
            if len(self.head) >= SNIFF_BYTES:
                self._check_type()
        await self._handle.write(data)

    def _check_type(self) -> None:
        media = sniff(self.head)
        wanted = ACCEPTED[self.kind]
        if media is None:
            found = describe(self.head)
            raise InvalidInput(
                self.field, f"the file is {found}; send {WITH_ARTICLE[self.kind]} ({wanted})"
            )
        if media.kind != self.kind:
            raise InvalidInput(
                self.field,
                f"the file is a {media.label} {media.kind}, not {WITH_ARTICLE[self.kind]}; "
                f"send {wanted}",
            )
        self.media = media

    async def finish(self) -> dict[str, Any]:
        """Close, verify by decoding, and move to the final name; the record."""
        await self._close()
        if self.size == 0:
            raise InvalidInput(self.field, "the file is empty")
        if self.media is None:
            self._check_type()
        media = self.media
        assert media is not None
        try:
            info = await asyncio.to_thread(inspect_sync, self.part, media)
        except ValueError as exc:
            raise InvalidInput(
                self.field, f"the file looks like {media.label} but cannot be decoded ({exc})"
            ) from None
        self.final = self.directory / f"{self.token}{media.ext}"
        await anyio.Path(self.part).rename(self.final)
        return {
            "stored": self.final.name,
            "upload_name": f"fastwan_{self.final.name}",
            "original_name": self.original,
            "content_type": media.content_type,
            "size_bytes": self.size,
            "kind": media.kind,
            "format": media.label,
            **{k: v for k, v in info.items() if v is not None},
        }

    async def _close(self) -> None:
        if self._handle is not None:
            handle, self._handle = self._handle, None
            await handle.aclose()

    async def discard(self) -> None:
        with anyio.CancelScope(shield=True):
            await self._close()
            await anyio.Path(self.part).unlink(missing_ok=True)
            if self.final is not None:
                await anyio.Path(self.final).unlink(missing_ok=True)


# -- the whole form -------------------------------------------------------------------------


@dataclass
class ReceivedForm:
    fields: dict[str, str] = field(default_factory=dict)
    files: dict[str, dict[str, Any]] = field(default_factory=dict)


@dataclass
class _Part:
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    name: str = ""
    filename: str | None = None
    is_file: bool = False
    data: bytearray = field(default_factory=bytearray)
    writer: _FileWriter | None = None

    def read_disposition(self) -> None:
        for key, value in self.headers:
            if key.lower() == b"content-disposition":
                _, options = parse_options_header(value)
                self.name = options.get(b"name", b"").decode("utf-8", "replace")
                if b"filename" in options:
                    self.is_file = True
                    self.filename = options[b"filename"].decode("utf-8", "replace")
                return
        raise InvalidInput("body", "a multipart part has no Content-Disposition header")


class _FormReader:
    """Feeds a streaming multipart parser. Its callbacks are synchronous, so they only record
    events; `feed` then applies them with the awaits that disk writes need."""

    def __init__(
        self,
        boundary: bytes,
        expect: Mapping[str, MediaKind],
        uploads_dir: Path,
        max_upload_bytes: int,
    ) -> None:
        self.expect = expect
        self.uploads_dir = uploads_dir
        self.max_upload_bytes = max_upload_bytes
        self.form = ReceivedForm()
        self.writers: list[_FileWriter] = []
        self.ended = False
        self._events: list[tuple[str, bytes]] = []
        self._part = _Part()
        self._header_field = bytearray()
        self._header_value = bytearray()
        try:
            self._parser = MultipartParser(boundary, self._callbacks())
        except (FormParserError, ValueError) as exc:
            raise InvalidInput("body", f"not a valid multipart/form-data body: {exc}") from None

    def _callbacks(self) -> MultipartCallbacks:
        def data_of(kind: str) -> Callable[[bytes, int, int], None]:
            def on(data: bytes, start: int, end: int) -> None:
                self._events.append((kind, bytes(data[start:end])))

            return on

        def mark(kind: str) -> Callable[[], None]:
            return lambda: self._events.append((kind, b""))

        def on_end() -> None:
            self.ended = True

        return {
            "on_part_begin": mark("begin"),
            "on_part_data": data_of("data"),
            "on_part_end": mark("end"),
            "on_header_field": data_of("hfield"),
            "on_header_value": data_of("hvalue"),
            "on_header_end": mark("hend"),
            "on_headers_finished": mark("hdone"),
            "on_end": on_end,
        }

    async def feed(self, chunk: bytes) -> None:
        try:
            self._parser.write(chunk)
        except FormParserError as exc:
            raise InvalidInput("body", f"not a valid multipart/form-data body: {exc}") from None
        events, self._events = self._events, []
        for kind, data in events:
            await self._apply(kind, data)

    async def _apply(self, kind: str, data: bytes) -> None:
        part = self._part
        if kind == "begin":
            self._part = _Part()
        elif kind == "hfield":
            self._header_field += data
        elif kind == "hvalue":
            self._header_value += data
        elif kind == "hend":
            part.headers.append((bytes(self._header_field), bytes(self._header_value)))
            self._header_field.clear()
            self._header_value.clear()
        elif kind == "hdone":
            part.read_disposition()
            if part.is_file:
                part.writer = await self._open_file(part)
            elif len(self.form.fields) >= MAX_FIELDS:
                raise InvalidInput("body", f"more than {MAX_FIELDS} form fields")
        elif kind == "data":
            if part.writer is not None:
                await part.writer.write(data)
            else:
                part.data += data
                if len(part.data) > MAX_FIELD_BYTES:
                    raise InvalidInput(part.name or "body", f"longer than {MAX_FIELD_BYTES} bytes")
        elif kind == "end":
            if part.writer is not None:
                self.form.files[part.name] = await part.writer.finish()
            else:
                try:
                    self.form.fields[part.name] = part.data.decode("utf-8")
                except UnicodeDecodeError:
                    raise InvalidInput(part.name or "body", "is not UTF-8 text") from None

    async def _open_file(self, part: _Part) -> _FileWriter:
        if part.name not in self.expect:
            taken = ", ".join(self.expect) or "none"
            raise InvalidInput(part.name or "body", f"unexpected file field (files taken: {taken})")
        if any(w.field == part.name for w in self.writers):
            raise InvalidInput(part.name, "sent more than once")
        writer = _FileWriter(
            part.name,
            self.expect[part.name],
            part.filename,
            self.uploads_dir,
            self.max_upload_bytes,
        )
        self.writers.append(writer)
        await writer.open()
        return writer

    async def discard(self) -> None:
        for writer in self.writers:
            await writer.discard()


async def receive_form(
    chunks: AsyncIterable[bytes],
    content_type: str | None,
    *,
    expect: Mapping[str, MediaKind],
    uploads_dir: Path,
    max_upload_bytes: int,
    content_length: str | None = None,
    required: bool = True,
) -> ReceivedForm:
    """Parse a multipart/form-data body, storing the file parts named in `expect`
    (`required=False`: each of them may be absent).

    Each expected field must arrive as a file part of its kind; other file parts are refused.
    A missing file is an `InvalidInput` naming its field; a file over `max_upload_bytes` is
    `PayloadTooLarge` (413). Nothing is left on disk when this raises.
    """
    mime, options = parse_options_header(content_type or "")
    boundary = options.get(b"boundary")
    if mime != b"multipart/form-data" or not boundary:
        raise InvalidInput(
            "body", "send multipart/form-data (for example curl -F 'image=@photo.jpg')"
        )
    # A body this much larger than its files may be cannot be accepted: say so before reading.
    limit = max_upload_bytes * len(expect) + MAX_FIELDS * MAX_FIELD_BYTES
    if content_length and content_length.isdigit() and int(content_length) > limit:
        raise PayloadTooLarge(
            f"the request body is {human_bytes(int(content_length))}; the upload limit is "
            f"{human_bytes(max_upload_bytes)} ({max_upload_bytes} bytes) per file",
            max_upload_bytes=max_upload_bytes,
        )
    await anyio.Path(uploads_dir).mkdir(parents=True, exist_ok=True)
    reader = _FormReader(boundary, expect, uploads_dir, max_upload_bytes)
    received = 0
    try:
        async for chunk in chunks:
            received += len(chunk)
            if received > limit:
                raise PayloadTooLarge(
                    f"the request body is larger than the upload limit of "
                    f"{human_bytes(max_upload_bytes)} ({max_upload_bytes} bytes) per file",
                    max_upload_bytes=max_upload_bytes,
                )
            if chunk:
                await reader.feed(chunk)
        if not reader.ended:
            raise InvalidInput("body", "the multipart body ended before its closing boundary")
        for name, kind in expect.items():
            if required and name not in reader.form.files:
                raise InvalidInput(
                    name,
                    f"{WITH_ARTICLE[kind]} file is required (as a file part: -F '{name}=@file')",
                )
        return reader.form
    except BaseException:
        await reader.discard()
        raise


async def discard(records: Iterable[Mapping[str, Any]], uploads_dir: Path) -> None:
    """Remove stored uploads (when the job they were for could not be created)."""
    with anyio.CancelScope(shield=True):
        for record in records:
            stored = record.get("stored")
            if stored and "/" not in stored and "\\" not in stored:
                await anyio.Path(uploads_dir / stored).unlink(missing_ok=True)


async def sweep_partial_uploads(uploads_dir: Path) -> int:
    """Remove the `.part` files a killed process left behind (at startup, when no upload can
    be under way); the number removed."""
    removed = 0
    async for entry in anyio.Path(uploads_dir).iterdir():
        if entry.name.endswith(".part"):
            await entry.unlink(missing_ok=True)
            removed += 1
    if removed:
        log.info("removed %d unfinished upload(s) from %s", removed, uploads_dir)
    return removed
