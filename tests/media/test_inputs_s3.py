"""Input files with an S3 output store (proxy.media.inputs over proxy.media.s3), against moto's
S3 server on a loopback port: a received file goes to the bucket (streamed, in parts when
large) and leaves the disk; a job's copy of an upload is a copy inside the bucket; any
replica gets a local file of an input for as long as it needs one; deletes take the objects;
a store that fails is an error naming it, and leaves nothing behind. On local disk nothing
of this happens."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from proxy.db import Database
from proxy.errors import InvalidInput, NotFound
from proxy.media.inputs import InputStore
from proxy.media.s3 import S3OutputStore
from proxy.media.storage import OutputStore, StoreUnavailable
from tests.media.test_s3_store import MiB, MotoS3, random_bytes, staged_files, store_for
from tests.media.test_uploads import chunked, image_bytes, multipart, video_bytes

LIMIT = 32 * MiB


@dataclass
class Inputs:
    store: InputStore
    bucket: S3OutputStore
    moto: MotoS3
    directory: Path

    def objects(self) -> list[str]:
        return self.moto.keys(self.bucket.bucket)

    def body(self, name: str) -> bytes:
        return self.moto.body(self.bucket.bucket, f"outputs/inputs/{name}")

    def local(self) -> list[str]:
        return sorted(p.name for p in self.directory.iterdir()) if self.directory.exists() else []

    def receive(self, files: dict[str, tuple[str, bytes, str]], expect: dict[str, Any]) -> Any:
        """`InputStore.receiving` of a multipart body with these files."""
        body, content_type = multipart(files)
        return self.store.receiving(chunked(body, 64 * 1024), content_type, str(len(body)), expect)

    async def upload(self, data: bytes, kind: str = "image") -> dict[str, Any]:
        """POST /api/uploads, as the route does it."""
        async with self.receive({"file": ("photo.png", data, "x/y")}, {"file": kind}) as f:
            return await self.store.create(f.files["file"], "client-a")


@pytest.fixture
async def database(tmp_path: Path) -> AsyncIterator[Database]:
    db = Database(f"sqlite+aiosqlite:///{tmp_path / 'proxy.db'}")
    await db.migrate()
    try:
        yield db
    finally:
        await db.close()


@pytest.fixture
async def inputs(moto_s3: MotoS3, database: Database, tmp_path: Path) -> AsyncIterator[Inputs]:
    bucket = store_for(moto_s3, moto_s3.bucket(), tmp_path, part_bytes=5 * MiB)
    async with bucket:
        directory = tmp_path / "uploads"
        yield Inputs(InputStore(database, directory, LIMIT, bucket), bucket, moto_s3, directory)


def counting(client: Any, *methods: str) -> dict[str, int]:
    """Count the calls `client` gets to `methods` from now on."""
    calls = dict.fromkeys(methods, 0)
    for method in methods:
        original = getattr(client, method)

        async def counted(*args: Any, _method: str = method, _original: Any = original, **kw: Any):
            calls[_method] += 1
            return await _original(*args, **kw)

        setattr(client, method, counted)
    return calls


async def stored_name(inputs: Inputs, upload_id: str) -> str:
    row = await inputs.store._row(upload_id, None)
    return str(row.record["stored"])


# -- receiving ------------------------------------------------------------------------------


async def test_a_received_file_goes_to_the_bucket_and_leaves_the_disk(inputs: Inputs) -> None:
    png = image_bytes("PNG", (40, 30))
    clip = video_bytes("mp4")
    files = {"image": ("a.png", png, "image/png"), "video": ("b.mp4", clip, "video/mp4")}
    async with inputs.receive(files, {"image": "image", "video": "video"}) as form:
        image, video = form.files["image"], form.files["video"]
        assert inputs.local() == [], "a received file stayed on this replica's disk"
        objects = await asyncio.to_thread(inputs.objects)
        assert objects == sorted(f"outputs/inputs/{r['stored']}" for r in (image, video))
        assert await asyncio.to_thread(inputs.body, image["stored"]) == png
        assert await asyncio.to_thread(inputs.body, video["stored"]) == clip
        head = inputs.moto.client().head_object(
            Bucket=inputs.bucket.bucket, Key=f"outputs/inputs/{video['stored']}"
        )
        assert head["ContentType"] == "video/mp4"

    # Any replica (this one has no local file) reads it into a temporary file, gone after.
    async with inputs.store.local_file(image["stored"]) as path:
        assert path.parent.parent == inputs.bucket.root
        assert path.read_bytes() == png
    assert not path.exists() and staged_files(inputs.bucket) == []


async def test_a_create_call_that_fails_leaves_nothing_in_the_bucket(inputs: Inputs) -> None:
    files = {"image": ("a.png", image_bytes("PNG"), "image/png")}
    with pytest.raises(InvalidInput, match="width"):
        async with inputs.receive(files, {"image": "image"}):
            assert len(await asyncio.to_thread(inputs.objects)) == 1
            raise InvalidInput("width", "not a multiple of 16")  # the job was not created
    assert await asyncio.to_thread(inputs.objects) == [] and inputs.local() == []


async def test_a_large_input_goes_up_in_parts_and_is_copied_in_parts(inputs: Inputs) -> None:
    store = inputs.bucket
    data = random_bytes(11 * MiB + 3)
    source = inputs.directory / "big.mp4"
    inputs.directory.mkdir()
    source.write_bytes(data)
    calls = counting(store.client, "put_object", "upload_part", "upload_part_copy", "get_object")
    await store.put_input(source, "big.mp4")
    assert (calls["put_object"], calls["upload_part"]) == (0, 3), "not sent in 5 MiB parts"

    store.copy_max_bytes = 5 * MiB  # S3 copies 5 GiB in one call; the same rule, smaller
    await store.copy_input("big.mp4", "copy.mp4")
    assert calls["upload_part_copy"] == 3 and calls["get_object"] == 0, "copied through us"
    assert calls["upload_part"] == 3, "the copy sent bytes through the proxy"
    assert await asyncio.to_thread(inputs.body, "copy.mp4") == data
    assert await asyncio.to_thread(inputs.moto.uploads, store.bucket) == []
    async with store.reading_input("copy.mp4") as path:
        assert path.read_bytes() == data


# -- uploads and the jobs' copies -----------------------------------------------------------


async def test_a_jobs_copy_is_made_inside_the_bucket_and_deletes_take_the_objects(
    inputs: Inputs,
) -> None:
    png = image_bytes("PNG", (40, 30))
    upload = await inputs.upload(png)
    stored = await stored_name(inputs, upload["id"])
    calls = counting(inputs.bucket.client, "put_object", "upload_part", "get_object")
    record = await inputs.store.copy_for_job("image", upload["id"], "image")
    assert record["stored"] != stored and record["upload_name"] == f"fastwan_{record['stored']}"
    assert (record["width"], record["height"]) == (40, 30)
    assert calls == {"put_object": 0, "upload_part": 0, "get_object": 0}, "not a server copy"
    assert await asyncio.to_thread(inputs.body, record["stored"]) == png
    assert inputs.local() == []

    # Deleting the upload leaves the job's copy; discarding the job's inputs takes that too.
    await inputs.store.delete(upload["id"])
    assert await asyncio.to_thread(inputs.objects) == [f"outputs/inputs/{record['stored']}"]
    with pytest.raises(NotFound):
        await inputs.store.get(upload["id"])
    await inputs.store.discard([record])
    assert await asyncio.to_thread(inputs.objects) == []


async def test_an_input_gone_from_the_bucket_is_not_found_naming_the_store(
    inputs: Inputs,
) -> None:
    upload = await inputs.upload(image_bytes("PNG"))
    stored = await stored_name(inputs, upload["id"])
    await asyncio.to_thread(
        inputs.moto.client().delete_object,
        Bucket=inputs.bucket.bucket,
        Key=f"outputs/inputs/{stored}",
    )
    with pytest.raises(InvalidInput, match="no longer stored") as refused:
        await inputs.store.copy_for_job("image", upload["id"], "image")
    assert refused.value.field == "image"
    with pytest.raises(NotFound) as missing:
        async with inputs.store.local_file(stored):
            pass
    assert inputs.bucket.location in missing.value.message and stored in missing.value.message
    assert staged_files(inputs.bucket) == []


async def test_files_received_before_the_bucket_are_used_from_disk(inputs: Inputs) -> None:
    """An upload kept in UPLOADS_DIR (the store was local disk then) still serves: as it is,
    and copied into the bucket for a job."""
    png = image_bytes("PNG", (40, 30))
    local = InputStore(inputs.store.db, inputs.directory, LIMIT, OutputStore(inputs.directory))
    body, content_type = multipart({"file": ("p.png", png, "image/png")})
    async with local.receiving(chunked(body), content_type, None, {"file": "image"}) as form:
        upload = await local.create(form.files["file"], None)
    stored = await stored_name(inputs, upload["id"])
    assert inputs.local() == [stored]

    async with inputs.store.local_file(stored) as path:
        assert path == inputs.directory / stored
    record = await inputs.store.copy_for_job("image", upload["id"], "image")
    assert await asyncio.to_thread(inputs.body, record["stored"]) == png


# -- a store that fails ---------------------------------------------------------------------


async def test_a_store_that_is_down_refuses_uploads_and_keeps_nothing(inputs: Inputs) -> None:
    upload = await inputs.upload(image_bytes("PNG"))
    stored = await stored_name(inputs, upload["id"])
    inputs.moto.stop()

    with pytest.raises(StoreUnavailable) as down:
        await inputs.upload(image_bytes("PNG"))
    assert down.value.status_code == 503
    assert inputs.bucket.where in down.value.message and "store input" in down.value.message
    assert inputs.local() == [], "the refused file stayed on disk"

    with pytest.raises(StoreUnavailable, match="copy input"):
        await inputs.store.copy_for_job("image", upload["id"], "image")
    with pytest.raises(StoreUnavailable, match="read input"):
        async with inputs.store.local_file(stored):
            pass
    # A delete that cannot reach the store keeps the upload, to be deleted again.
    with pytest.raises(StoreUnavailable, match="delete input"):
        await inputs.store.delete(upload["id"])
    assert (await inputs.store.get(upload["id"]))["id"] == upload["id"]
    assert staged_files(inputs.bucket) == []


# -- local disk -----------------------------------------------------------------------------


async def test_on_local_disk_inputs_stay_in_the_folder(database: Database, tmp_path: Path) -> None:
    directory = tmp_path / "uploads"
    store = InputStore(database, directory, LIMIT, OutputStore(tmp_path / "outputs"))
    assert store.remote is None
    body, content_type = multipart({"file": ("p.png", image_bytes("PNG"), "image/png")})
    async with store.receiving(chunked(body), content_type, None, {"file": "image"}) as form:
        upload = await store.create(form.files["file"], None)
    stored = (await store._row(upload["id"], None)).record["stored"]
    record = await store.copy_for_job("image", upload["id"], "image")
    source, copy = directory / stored, directory / record["stored"]
    assert source.stat().st_ino == copy.stat().st_ino, "not a hard link"
    async with store.local_file(record["stored"]) as path:
        assert path == copy
    await store.delete(upload["id"])
    await store.discard([record])
    assert list(directory.iterdir()) == []
