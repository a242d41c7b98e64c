"""Outputs in an S3-compatible bucket (proxy.media.s3), against moto's S3 server on a loopback
port: multipart uploads from a staging file (aborted when they fail or are cancelled), HEAD
and ranged reads, local copies for joins, zips streamed from the bucket, deletes, the start-up
sweep of uploads left behind, and errors that name the store and what to check.

The server helpers here are shared with the e2e tests (the `moto_s3` fixture is in
tests/conftest.py)."""

from __future__ import annotations

import asyncio
import io
import logging
import os
import subprocess
import sys
import uuid
import zipfile
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError
from pydantic import ValidationError

from proxy.errors import NotFound
from proxy.media.responses import parse_range
from proxy.media.s3 import S3OutputStore
from proxy.media.storage import StoreError, StoreUnavailable, output_store_for
from proxy.media.zipstream import ZipChangedError, ZipEntry, plan_zip
from proxy.settings import Settings
from tests.support import REPO_ROOT, closed_port_url

moto_server = pytest.importorskip(
    "moto.server", reason="moto[server] is not installed (it comes with the [test] extra)"
)
boto3 = pytest.importorskip("boto3", reason="boto3 (a dependency of moto) is not installed")

MiB = 1 << 20
# moto takes any credentials; these are never anyone's.
CREDENTIALS = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing"}
REGION = "us-east-1"


@dataclass
class MotoS3:
    """moto's S3 server in a thread of this process, on a port of its own."""

    url: str
    server: Any
    stopped: bool = False
    buckets: list[str] = field(default_factory=list)

    def client(self) -> Any:
        return boto3.client("s3", endpoint_url=self.url, region_name=REGION, **CREDENTIALS)

    def bucket(self) -> str:
        """A fresh bucket (moto keeps every bucket for the whole process: names never repeat)."""
        name = f"t-{uuid.uuid4().hex[:16]}"
        self.client().create_bucket(Bucket=name)
        self.buckets.append(name)
        return name

    def keys(self, bucket: str, prefix: str = "") -> list[str]:
        listed = self.client().list_objects_v2(Bucket=bucket, Prefix=prefix)
        return sorted(o["Key"] for o in listed.get("Contents", []))

    def body(self, bucket: str, key: str) -> bytes:
        return self.client().get_object(Bucket=bucket, Key=key)["Body"].read()

    def uploads(self, bucket: str) -> list[str]:
        listed = self.client().list_multipart_uploads(Bucket=bucket)
        return [u["Key"] for u in listed.get("Uploads", [])]

    def stop(self) -> None:
        """Down: connections are refused from now on."""
        if not self.stopped:
            self.stopped = True
            self.server.stop()
            self.server._server.server_close()  # stop() leaves the socket listening


@contextmanager
def moto_running() -> Iterator[MotoS3]:
    """moto's S3 server on a free loopback port (port 0: no race for it), stopped after."""
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # a line per request otherwise
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    moto = MotoS3(f"http://{host}:{port}", server)
    try:
        yield moto
    finally:
        moto.stop()


def store_for(moto: MotoS3, bucket: str, tmp_path: Path, **kw: Any) -> S3OutputStore:
    return S3OutputStore(
        f"s3://{bucket}/outputs",
        staging_dir=tmp_path / "staging",
        endpoint_url=moto.url,
        region=REGION,
        credentials=CREDENTIALS,
        **kw,
    )


@pytest.fixture
async def store(moto_s3: MotoS3, tmp_path: Path) -> AsyncIterator[S3OutputStore]:
    async with store_for(moto_s3, moto_s3.bucket(), tmp_path, part_bytes=5 * MiB) as opened:
        yield opened


def random_bytes(size: int) -> bytes:
    return os.urandom(size)


def staged_files(store: S3OutputStore) -> list[Path]:
    return [p for p in store.root.rglob("*") if p.is_file()]


async def put(store: S3OutputStore, name: str, data: bytes) -> None:
    async with store.writing(name) as path:
        await asyncio.to_thread(path.write_bytes, data)


# -- writing -----------------------------------------------------------------------------


async def test_a_large_output_goes_up_in_parts_and_nothing_stays_behind(store, moto_s3):
    data = random_bytes(12 * MiB + 7)  # three parts of 5 MiB, the last one short
    sent: list[int] = []
    upload_part = store.client.upload_part

    async def counting(**kw: Any) -> Any:
        sent.append(len(kw["Body"]))
        return await upload_part(**kw)

    store.client.upload_part = counting  # type: ignore[method-assign]
    await put(store, "job1.mp4", data)

    assert sent == [5 * MiB, 5 * MiB, 2 * MiB + 7], "not a multipart upload in 5 MiB parts"
    assert await asyncio.to_thread(moto_s3.keys, store.bucket) == ["outputs/job1.mp4"]
    assert await asyncio.to_thread(moto_s3.body, store.bucket, "outputs/job1.mp4") == data
    assert await asyncio.to_thread(moto_s3.uploads, store.bucket) == []
    assert staged_files(store) == []
    opened = await store.open("job1.mp4")
    assert (opened.size_bytes, opened.content_type, opened.path) == (len(data), "video/mp4", None)


async def test_a_small_output_is_one_put(store, moto_s3):
    await put(store, "job2.png", b"png bytes")
    assert await asyncio.to_thread(moto_s3.body, store.bucket, "outputs/job2.png") == b"png bytes"
    assert (await store.open("job2.png")).content_type == "image/png"


async def test_an_error_while_writing_keeps_nothing(store, moto_s3):
    with pytest.raises(RuntimeError, match="writer broke"):
        async with store.writing("job3.mp4") as path:
            path.write_bytes(b"half a video")
            raise RuntimeError("writer broke")
    assert await asyncio.to_thread(moto_s3.keys, store.bucket) == []
    assert staged_files(store) == []


async def test_a_failed_part_aborts_the_upload(store, moto_s3):
    upload_part = store.client.upload_part
    calls = 0

    async def failing(**kw: Any) -> Any:
        nonlocal calls
        calls += 1
        if calls == 2:
            raise ClientError(
                {
                    "Error": {
                        "Code": "InternalError",
                        "Message": "We encountered an internal error",
                    },
                    "ResponseMetadata": {"HTTPStatusCode": 500},
                },
                "UploadPart",
            )
        return await upload_part(**kw)

    store.client.upload_part = failing  # type: ignore[method-assign]
    with pytest.raises(StoreUnavailable, match="is failing") as caught:
        await put(store, "job4.mp4", random_bytes(11 * MiB))
    assert caught.value.status_code == 503 and store.location in caught.value.message
    assert await asyncio.to_thread(moto_s3.uploads, store.bucket) == [], "upload left open"
    assert await asyncio.to_thread(moto_s3.keys, store.bucket) == []
    assert staged_files(store) == []


async def test_a_cancelled_upload_is_aborted(store, moto_s3):
    upload_part = store.client.upload_part
    second_part = asyncio.Event()

    async def stalling(**kw: Any) -> Any:
        if kw["PartNumber"] == 2:
            second_part.set()
            await asyncio.Event().wait()  # until cancelled
        return await upload_part(**kw)

    store.client.upload_part = stalling  # type: ignore[method-assign]
    task = asyncio.create_task(put(store, "job5.mp4", random_bytes(11 * MiB)))
    async with asyncio.timeout(30):
        await second_part.wait()
    assert await asyncio.to_thread(moto_s3.uploads, store.bucket) == ["outputs/job5.mp4"]
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, 30)
    assert await asyncio.to_thread(moto_s3.uploads, store.bucket) == []
    assert await asyncio.to_thread(moto_s3.keys, store.bucket) == []
    assert staged_files(store) == []


async def test_uploads_left_by_an_earlier_process_are_aborted_at_start(moto_s3, tmp_path):
    bucket = moto_s3.bucket()
    client = moto_s3.client()
    client.create_multipart_upload(Bucket=bucket, Key="outputs/died.mp4")
    client.create_multipart_upload(Bucket=bucket, Key="elsewhere/not-ours.mp4")
    (tmp_path / "staging" / "run-old").mkdir(parents=True)
    (tmp_path / "staging" / "run-old" / "x.mp4").write_bytes(b"left")
    os.utime(tmp_path / "staging" / "run-old", (0, 0))
    async with store_for(moto_s3, bucket, tmp_path, stale_upload_s=0) as store:
        assert await asyncio.to_thread(moto_s3.uploads, bucket) == ["elsewhere/not-ours.mp4"]
        assert not (tmp_path / "staging" / "run-old").exists()
        assert store.root.parent == tmp_path / "staging" and store.root.is_dir()
    assert not store.root.exists()


# -- reading -----------------------------------------------------------------------------


async def test_ranges_and_local_copies(store):
    data = random_bytes(300_000)
    await put(store, "job6.mp4", data)
    file = await store.open("job6.mp4")
    for first, last in ((0, 0), (10, 99), (299_990, None), (0, None)):
        stream = await store.open_stream(file, first, last)
        try:
            want = data[first : None if last is None else last + 1]
            assert stream.length == len(want)
            got = b""
            while chunk := await stream.read(64 * 1024):
                assert len(chunk) <= 64 * 1024
                got += chunk
            assert got == want
        finally:
            await stream.aclose()
    async with store.reading(["job6.mp4", "job6.mp4"]) as paths:
        assert len(paths) == 2 and all(p.read_bytes() == data for p in paths)
    assert not any(p.exists() for p in paths)
    assert staged_files(store) == []


async def test_missing_outputs_are_not_found_and_bad_names_never_reach_the_store(store):
    for name in ("nothing.mp4", "../x.mp4", ".hidden", "a.mp4.part"):
        with pytest.raises(NotFound):
            await store.open(name)
    assert not await store.exists("nothing.mp4")
    await store.delete(["nothing.mp4"])  # already gone: no error


async def test_delete_removes_the_objects(store, moto_s3):
    await put(store, "job7.mp4", b"a")
    await put(store, "job7_1.png", b"b")
    await store.delete(["job7.mp4", "job7_1.png"])
    assert await asyncio.to_thread(moto_s3.keys, store.bucket) == []


async def test_a_zip_streams_from_the_bucket(store):
    datas = {f"job{i}.mp4": random_bytes(size) for i, size in enumerate((3 * MiB + 5, 1, 0))}
    for name, data in datas.items():
        await put(store, name, data)
    files = [await store.open(name) for name in datas]
    plan = await plan_zip(
        [ZipEntry(f"job_{i}_{f.name}", f) for i, f in enumerate(files)], chunk_bytes=256 * 1024
    )
    out = io.BytesIO()
    sizes = []
    async with asyncio.timeout(60):
        async for chunk in plan.stream():
            sizes.append(len(chunk))
            out.write(chunk)
    assert sum(sizes) == plan.size and max(sizes) <= 256 * 1024 + 4096
    with zipfile.ZipFile(out) as archive:
        assert archive.testzip() is None
        for i, (name, data) in enumerate(datas.items()):
            assert archive.read(f"job_{i}_{name}") == data


async def test_an_object_replaced_after_planning_aborts_the_zip(store):
    await put(store, "job8.mp4", random_bytes(100_000))
    plan = await plan_zip([ZipEntry("a.mp4", await store.open("job8.mp4"))])
    await put(store, "job8.mp4", random_bytes(100_001))
    with pytest.raises((ZipChangedError, StoreUnavailable)):
        async with asyncio.timeout(30):
            async for _ in plan.stream():
                pass


async def test_an_abandoned_zip_closes_its_stream(store):
    await put(store, "job9.mp4", random_bytes(2 * MiB))
    plan = await plan_zip([ZipEntry("a.mp4", await store.open("job9.mp4"))], chunk_bytes=65536)
    stream = plan.stream()
    async with asyncio.timeout(30):
        await anext(stream)
        await anext(stream)  # inside the object's bytes
    await stream.aclose()  # a client that went away: nothing left open (no ResourceWarning)


# -- errors ------------------------------------------------------------------------------


async def test_a_missing_bucket_says_so(moto_s3, tmp_path):
    async with store_for(moto_s3, "no-such-bucket-here", tmp_path) as store:
        with pytest.raises(StoreError) as caught:
            await store.open("job.mp4")
        assert caught.value.status_code == 502
        message = caught.value.message
        assert "'no-such-bucket-here'" in message and "does not exist" in message
        assert "OUTPUT_STORE" in message and moto_s3.url in message
        with pytest.raises(StoreError, match="does not exist"):
            await put(store, "job.mp4", b"x")
        assert staged_files(store) == []


async def test_a_store_that_is_down_is_a_503_naming_it_and_what_to_check(tmp_path):
    url = closed_port_url()
    store = S3OutputStore(
        "s3://bucket/p",
        staging_dir=tmp_path,
        endpoint_url=url,
        region=REGION,
        credentials=CREDENTIALS,
    )
    async with asyncio.timeout(60), store:
        for attempt in (store.open("job.mp4"), put(store, "job.mp4", b"x"), store.delete(["a"])):
            with pytest.raises(StoreUnavailable) as caught:
                await attempt
            message = caught.value.message
            assert caught.value.status_code == 503
            assert f"s3://bucket/p at {url}" in message and "cannot be reached" in message
            assert "S3_ENDPOINT_URL" in message and "running" in message
            assert "Traceback" not in message and str(tmp_path) not in message


@pytest.mark.parametrize(
    ("code", "status", "kind", "words"),
    [
        ("InvalidAccessKeyId", 403, StoreError, "AWS_ACCESS_KEY_ID"),
        ("SignatureDoesNotMatch", 403, StoreError, "AWS_SECRET_ACCESS_KEY"),
        ("403", 403, StoreError, "credentials"),
        ("AuthorizationHeaderMalformed", 400, StoreError, "AWS_REGION"),
        ("SlowDown", 503, StoreUnavailable, "try again"),
        ("InternalError", 500, StoreUnavailable, "is failing"),
        ("NoSuchBucket", 404, StoreError, "does not exist"),
        ("InvalidArgument", 400, StoreError, "refused to read output x.mp4"),
    ],
)
def test_what_the_store_answers_becomes_a_message_to_act_on(code, status, kind, words, tmp_path):
    store = S3OutputStore("s3://bkt", staging_dir=tmp_path, endpoint_url="http://s3.local")
    error = ClientError(
        {"Error": {"Code": code, "Message": "m"}, "ResponseMetadata": {"HTTPStatusCode": status}},
        "GetObject",
    )
    translated = store._translated(error, "read output x.mp4")
    assert type(translated) is kind and words in translated.message
    assert "s3://bkt at http://s3.local" in translated.message


# -- settings ------------------------------------------------------------------------------


def test_the_store_is_chosen_from_the_settings(tmp_path):
    local = output_store_for(Settings(data_dir=tmp_path))
    assert type(local).__name__ == "OutputStore" and local.root == tmp_path / "outputs"
    s3 = output_store_for(
        Settings(
            data_dir=tmp_path,
            output_store="s3://bkt/a/b/",
            s3_endpoint_url="http://127.0.0.1:9000/",
            s3_proxy_downloads=True,
            **CREDENTIALS,
        )
    )
    assert isinstance(s3, S3OutputStore)
    assert (s3.bucket, s3.prefix, s3.endpoint_url, s3.proxy_downloads) == (
        "bkt",
        "a/b/",
        "http://127.0.0.1:9000",
        True,
    )
    assert s3.key("j.mp4") == "a/b/j.mp4"


@pytest.mark.parametrize(
    ("value", "words"),
    [
        ("gs://bucket", "OUTPUT_STORE takes s3://bucket"),
        ("/srv/outputs", "OUTPUT_STORE takes s3://bucket"),
        ("s3://", "names no valid bucket"),
        ("s3://bucket/../up", "'..'"),
        ("s3://bucket:9000/x", "S3_ENDPOINT_URL"),
        ("s3://key:secret@bucket", "AWS_ACCESS_KEY_ID"),
        ("https://key:secret@bucket", "AWS_ACCESS_KEY_ID"),
    ],
)
def test_a_bad_output_store_is_refused_with_what_is_wrong(value, words):
    with pytest.raises(ValidationError) as caught:
        Settings(output_store=value)
    assert words in str(caught.value)
    # Credentials are never repeated: not by the message, not by pydantic after it.
    assert "secret" not in str(caught.value).replace("AWS_SECRET", "")


def test_a_bad_output_store_stops_the_start(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "S3_", "OUTPUT_"))}
    done = subprocess.run(
        [sys.executable, "-m", "proxy", "serve", "--data-dir", str(tmp_path)],
        cwd=REPO_ROOT,
        env={**env, "OUTPUT_STORE": "gs://somewhere"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2, done
    assert "OUTPUT_STORE takes s3://bucket or s3://bucket/prefix" in done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize(
    ("header", "size", "want"),
    [
        ("bytes=0-99", 1000, (0, 99)),
        ("bytes=900-", 1000, (900, 999)),
        ("bytes=-100", 1000, (900, 999)),
        ("bytes=-5000", 1000, (0, 999)),
        ("bytes=990-2000", 1000, (990, 999)),
        ("bytes=1000-", 1000, "unsatisfiable"),
        ("bytes=-0", 1000, "unsatisfiable"),
        ("bytes=0-", 0, "unsatisfiable"),
        ("bytes=0-9, 5-20", 1000, (0, 20)),
        ("bytes=0-9, 50-60", 1000, None),
    ],
)
def test_range_headers(header, size, want):
    assert parse_range(header, size) == want


@pytest.mark.parametrize("header", ["items=0-1", "bytes=a-b", "bytes=5-1", "bytes", "bytes=1-2-3"])
def test_malformed_range_headers(header):
    from proxy.media.responses import MalformedRange

    with pytest.raises(MalformedRange):
        parse_range(header, 1000)
