"""Uploads: streamed under a size limit, typed by content, proven to decode, stored under a
generated name, and nothing left on disk when anything is wrong."""

from __future__ import annotations

import io
from collections.abc import AsyncIterator
from fractions import Fraction
from pathlib import Path

import av
import httpx
import numpy as np
import pytest
from PIL import Image

from proxy.errors import InvalidInput, PayloadTooLarge
from proxy.media.uploads import (
    AVI,
    JPEG,
    MKV,
    MOV,
    MP4,
    PNG,
    WEBM,
    WEBP,
    discard,
    human_bytes,
    receive_form,
    safe_display_name,
    sniff,
)

# -- media made here --------------------------------------------------------------------------


def image_bytes(fmt: str, size: tuple[int, int] = (48, 32), noise: bool = False) -> bytes:
    buf = io.BytesIO()
    if noise:  # incompressible, so the file is as large as its pixels
        pixels = np.random.default_rng(0).integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
        Image.fromarray(pixels).save(buf, format=fmt)
    else:
        Image.new("RGB", size, (200, 40, 90)).save(buf, format=fmt)
    return buf.getvalue()


VIDEO_FORMATS = {
    # name: (container format, codec, pixel format)
    "mp4": ("mp4", "libx264", "yuv420p"),
    "mov": ("mov", "libx264", "yuv420p"),
    "webm": ("webm", "libvpx", "yuv420p"),
    "mkv": ("matroska", "mpeg4", "yuv420p"),
    "avi": ("avi", "mpeg4", "yuv420p"),
}


def video_bytes(
    kind: str = "mp4", frames: int = 11, size: tuple[int, int] = (64, 48), fps: int = 12
) -> bytes:
    fmt, codec, pix = VIDEO_FORMATS[kind]
    buf = io.BytesIO()
    with av.open(buf, "w", format=fmt) as out:
        stream = out.add_stream(codec, rate=fps)
        stream.width, stream.height = size
        stream.pix_fmt = pix
        stream.time_base = Fraction(1, fps)
        for i in range(frames):
            pixels = np.full((size[1], size[0], 3), (i * 20) % 255, dtype=np.uint8)
            frame = av.VideoFrame.from_ndarray(pixels, format="rgb24")
            frame.pts = i
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    return buf.getvalue()


def multipart(
    files: dict[str, tuple[str, bytes, str]], data: dict[str, str] | None = None
) -> tuple[bytes, str]:
    request = httpx.Request("POST", "http://test/", files=files, data=data or {})
    return request.read(), request.headers["content-type"]


async def chunked(body: bytes, size: int = 4096) -> AsyncIterator[bytes]:
    for start in range(0, len(body), size):
        yield body[start : start + size]


async def receive(tmp_path: Path, files, data=None, *, expect, limit=10 * 1024 * 1024, chunk=4096):
    body, content_type = multipart(files, data)
    return await receive_form(
        chunked(body, chunk),
        content_type,
        expect=expect,
        uploads_dir=tmp_path / "up",
        max_upload_bytes=limit,
        content_length=str(len(body)),
    )


def leftovers(tmp_path: Path) -> list[str]:
    folder = tmp_path / "up"
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


# -- sniffing -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (image_bytes("JPEG"), JPEG),
        (image_bytes("PNG"), PNG),
        (image_bytes("WEBP"), WEBP),
        (video_bytes("mp4"), MP4),
        (video_bytes("mov"), MOV),
        (video_bytes("webm"), WEBM),
        (video_bytes("mkv"), MKV),
        (video_bytes("avi"), AVI),
        (b"hello, this is not a video at all\n" * 4, None),
        (b"GIF89a" + b"\0" * 60, None),
        (b"\0\0\0\x1cftypavif" + b"\0" * 60, None),
        (b"", None),
    ],
)
def test_type_is_decided_by_content(data: bytes, expected) -> None:
    assert sniff(data[:64]) is expected


def test_helpers() -> None:
    assert human_bytes(100 * 1024 * 1024) == "100 MB"
    assert human_bytes(1500) == "1.5 KB"
    assert human_bytes(12) == "12 bytes"
    assert safe_display_name("../../etc/passwd") == "passwd"
    assert safe_display_name("C:\\Users\\x\\cat.png") == "cat.png"
    assert safe_display_name("a\x00b\nc.png") == "abc.png"
    assert safe_display_name("") is None


# -- accepted files -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fmt", "ext", "content_type"),
    [("JPEG", ".jpg", "image/jpeg"), ("PNG", ".png", "image/png"), ("WEBP", ".webp", "image/webp")],
)
async def test_each_image_type_is_stored_under_a_generated_name(tmp_path, fmt, ext, content_type):
    data = image_bytes(fmt)
    form = await receive(
        tmp_path,
        {"image": ("holiday photo.bin", data, "text/plain")},
        {"prompt": "a cat"},
        expect={"image": "image"},
        chunk=7,
    )
    record = form.files["image"]
    assert form.fields == {"prompt": "a cat"}
    assert record["stored"].endswith(ext) and len(record["stored"]) == 32 + len(ext)
    assert record["upload_name"] == f"fastwan_{record['stored']}"
    assert record["original_name"] == "holiday photo.bin"
    assert record["content_type"] == content_type
    assert record["size_bytes"] == len(data)
    assert (record["width"], record["height"]) == (48, 32)
    assert (tmp_path / "up" / record["stored"]).read_bytes() == data
    assert leftovers(tmp_path) == [record["stored"]]


@pytest.mark.parametrize(
    ("kind", "ext", "content_type", "frames"),
    [
        ("mp4", ".mp4", "video/mp4", 11),
        ("mov", ".mov", "video/quicktime", 11),
        ("webm", ".webm", "video/webm", None),  # WebM does not record a frame count
        ("avi", ".avi", "video/x-msvideo", 11),
    ],
)
async def test_each_video_type_is_stored_and_described(tmp_path, kind, ext, content_type, frames):
    data = video_bytes(kind)
    form = await receive(
        tmp_path, {"video": ("clip", data, "application/octet-stream")}, expect={"video": "video"}
    )
    record = form.files["video"]
    assert record["stored"].endswith(ext)
    assert record["content_type"] == content_type
    assert record["kind"] == "video"
    assert (record["width"], record["height"]) == (64, 48)
    assert record.get("frames") == frames
    assert record["fps"] == 12
    assert leftovers(tmp_path) == [record["stored"]]


async def test_a_png_named_mp4_is_an_image_where_an_image_is_expected(tmp_path):
    data = image_bytes("PNG")
    form = await receive(
        tmp_path, {"image": ("movie.mp4", data, "video/mp4")}, expect={"image": "image"}
    )
    assert form.files["image"]["content_type"] == "image/png"
    assert form.files["image"]["stored"].endswith(".png")


async def test_a_png_named_mp4_is_refused_where_a_video_is_expected(tmp_path):
    data = image_bytes("PNG")
    with pytest.raises(InvalidInput) as err:
        await receive(
            tmp_path, {"video": ("movie.mp4", data, "video/mp4")}, expect={"video": "video"}
        )
    assert err.value.field == "video"
    assert "PNG image, not a video" in err.value.message
    assert leftovers(tmp_path) == []


async def test_traversal_looking_names_are_never_used_as_paths(tmp_path):
    data = image_bytes("PNG")
    for name in ("../../escape.png", "/etc/passwd", "..\\..\\win.png", "a/../../b.png", ".."):
        form = await receive(
            tmp_path, {"image": (name, data, "image/png")}, expect={"image": "image"}
        )
        record = form.files["image"]
        assert "/" not in record["stored"] and ".." not in record["stored"]
        assert (tmp_path / "up" / record["stored"]).is_file()
        assert record["original_name"] in (None, "escape.png", "passwd", "win.png", "b.png")
    assert not (tmp_path / "escape.png").exists()
    assert not (tmp_path.parent / "escape.png").exists()
    assert all(p.suffix == ".png" for p in (tmp_path / "up").iterdir())


# -- refused files: a clear error, nothing on disk ------------------------------------------


async def test_oversize_is_413_with_the_limit_and_leaves_nothing(tmp_path):
    data = image_bytes("PNG", (100, 100), noise=True)
    body, content_type = multipart({"image": ("big.png", data, "image/png")})
    with pytest.raises(PayloadTooLarge) as err:
        # No Content-Length: the limit is enforced while streaming.
        await receive_form(
            chunked(body, 512),
            content_type,
            expect={"image": "image"},
            uploads_dir=tmp_path / "up",
            max_upload_bytes=1000,
        )
    assert err.value.status_code == 413
    assert "1000 bytes" in err.value.message and "image" in err.value.message
    assert leftovers(tmp_path) == []


async def test_oversize_by_content_length_is_refused_before_reading(tmp_path):
    async def never() -> AsyncIterator[bytes]:
        raise AssertionError("the body should not be read")
        yield b""  # pragma: no cover

    body, content_type = multipart({"image": ("x.png", b"x", "image/png")})
    with pytest.raises(PayloadTooLarge) as err:
        await receive_form(
            never(),
            content_type,
            expect={"image": "image"},
            uploads_dir=tmp_path / "up",
            max_upload_bytes=1000,
            content_length=str(50 * 1024 * 1024),
        )
    assert "1000 bytes" in err.value.message


async def test_corrupt_image_is_refused(tmp_path):
    good = image_bytes("JPEG", (200, 200))
    for data in (good[: len(good) // 2], image_bytes("PNG")[:40] + b"\0" * 500):
        with pytest.raises(InvalidInput) as err:
            await receive(
                tmp_path, {"image": ("x.jpg", data, "image/jpeg")}, expect={"image": "image"}
            )
        assert err.value.field == "image" and "cannot be decoded" in err.value.message
    assert leftovers(tmp_path) == []


async def test_a_text_file_is_not_a_video(tmp_path):
    data = b"this is a text file pretending to be a video\n" * 20
    with pytest.raises(InvalidInput) as err:
        await receive(
            tmp_path, {"video": ("clip.mp4", data, "video/mp4")}, expect={"video": "video"}
        )
    assert err.value.field == "video"
    assert "text" in err.value.message and "MP4" in err.value.message
    assert leftovers(tmp_path) == []


async def test_a_video_header_with_no_video_inside_is_refused(tmp_path):
    data = video_bytes("mp4")[:64] + b"\0" * 2000
    with pytest.raises(InvalidInput) as err:
        await receive(
            tmp_path, {"video": ("clip.mp4", data, "video/mp4")}, expect={"video": "video"}
        )
    assert "cannot be decoded" in err.value.message
    assert leftovers(tmp_path) == []


async def test_a_tiny_file_is_judged_at_its_end(tmp_path):
    for data, words in ((b"", "empty"), (b"\xff\xd8\xff", "cannot be decoded"), (b"hi", "text")):
        with pytest.raises(InvalidInput) as err:
            await receive(
                tmp_path, {"image": ("x.jpg", data, "image/jpeg")}, expect={"image": "image"}
            )
        assert words in err.value.message
    assert leftovers(tmp_path) == []


async def test_missing_file_names_the_field(tmp_path):
    boundary = "b0undary"
    body = (
        "".join(
            f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'
            for k, v in {"prompt": "x", "image": "not a file"}.items()
        )
        + f"--{boundary}--\r\n"
    )
    with pytest.raises(InvalidInput) as err:
        await receive_form(
            chunked(body.encode()),
            f"multipart/form-data; boundary={boundary}",
            expect={"image": "image"},
            uploads_dir=tmp_path / "up",
            max_upload_bytes=1000,
        )
    assert err.value.field == "image" and "required" in err.value.message


async def test_unexpected_and_repeated_file_fields_are_refused(tmp_path):
    png = image_bytes("PNG")
    with pytest.raises(InvalidInput) as err:
        await receive(
            tmp_path,
            {"image": ("a.png", png, "image/png"), "other": ("b.png", png, "image/png")},
            expect={"image": "image"},
        )
    assert err.value.field == "other"
    request = httpx.Request(
        "POST",
        "http://t/",
        files=[("image", ("a.png", png, "image/png")), ("image", ("b.png", png, "image/png"))],
    )
    with pytest.raises(InvalidInput) as err:
        await receive_form(
            chunked(request.read()),
            request.headers["content-type"],
            expect={"image": "image"},
            uploads_dir=tmp_path / "up",
            max_upload_bytes=10**6,
        )
    assert "more than once" in err.value.message
    assert leftovers(tmp_path) == []


async def test_not_multipart_and_truncated_bodies_are_refused(tmp_path):
    with pytest.raises(InvalidInput) as err:
        await receive_form(
            chunked(b"{}"),
            "application/json",
            expect={"image": "image"},
            uploads_dir=tmp_path / "up",
            max_upload_bytes=1000,
        )
    assert err.value.field == "body" and "multipart/form-data" in err.value.message
    body, content_type = multipart({"image": ("a.png", image_bytes("PNG"), "image/png")})
    with pytest.raises(InvalidInput) as err:
        await receive_form(
            chunked(body[:-60]),
            content_type,
            expect={"image": "image"},
            uploads_dir=tmp_path / "up",
            max_upload_bytes=10**6,
        )
    assert "ended" in err.value.message
    assert leftovers(tmp_path) == []


async def test_long_text_fields_are_refused(tmp_path):
    with pytest.raises(InvalidInput) as err:
        await receive(
            tmp_path,
            {"image": ("a.png", image_bytes("PNG"), "image/png")},
            {"prompt": "x" * 70000},
            expect={"image": "image"},
        )
    assert err.value.field == "prompt"


async def test_a_client_that_goes_away_leaves_nothing(tmp_path):
    body, content_type = multipart({"video": ("a.mp4", video_bytes("mp4", frames=30), "video/mp4")})

    class Gone(Exception):
        pass

    async def cut() -> AsyncIterator[bytes]:
        yield body[: len(body) // 2]
        raise Gone()

    with pytest.raises(Gone):
        await receive_form(
            cut(),
            content_type,
            expect={"video": "video"},
            uploads_dir=tmp_path / "up",
            max_upload_bytes=10**7,
        )
    assert leftovers(tmp_path) == []


async def test_discard_removes_stored_uploads(tmp_path):
    form = await receive(
        tmp_path, {"image": ("a.png", image_bytes("PNG"), "image/png")}, expect={"image": "image"}
    )
    await discard(form.files.values(), tmp_path / "up")
    assert leftovers(tmp_path) == []
