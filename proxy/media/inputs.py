"""Input files for jobs (the image of image-to-video, the video of video-to-video): received
once, here, for every surface.

Two ways in, one record shape (see `proxy.media.uploads`):
- with the job: a multipart create call. `receiving(...)` streams the form to disk and, if
  anything fails before the job exists, removes what it stored.
- ahead of the job: `POST /api/uploads` stores a file as a reusable upload with an id (a row in
  `uploads`); a job that names the id gets its own hard-linked copy, so deleting the job or the
  upload never takes the file from under the other.

Where the bytes are (`InputFiles`): on local disk, in UPLOADS_DIR (the default). With an output
store that every replica reads (a bucket, OUTPUT_STORE=s3://…) each stored file goes there
once received, and leaves UPLOADS_DIR: a job may be handed to ComfyUI by another replica than
the one that received its image, and an upload or job deleted on any replica takes its bytes
with it (a copy left on the receiving replica's disk would outlive a delete made elsewhere).
A job's own copy is then a copy made inside the store, and `local_file` fetches an input into
a temporary file for as long as it is needed. Files found in UPLOADS_DIR (received before the
store was a bucket) are still used from there.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import AsyncIterable, AsyncIterator, Iterable, Mapping
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import anyio
from sqlalchemy import Column, DateTime, String, Table, delete, insert, select

from proxy.auth import Principal
from proxy.db import Database, JSONType, metadata
from proxy.errors import InvalidInput, NotFound
from proxy.media.storage import OutputStore, StoreError
from proxy.media.uploads import MediaKind, ReceivedForm, discard, receive_form

log = logging.getLogger("proxy.uploads")

# A clean-up after another failure gets this long with the store, even when cancelled.
CLEANUP_TIMEOUT_S = 10.0

uploads_table = Table(
    "uploads",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("client_key", String(128), index=True),
    Column("kind", String(16), nullable=False),
    # The stored record: {"stored", "original_name", "content_type", "width", ...}.
    Column("record", JSONType, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False, index=True),
)

# What answers show of a record (never the stored file name: it is ours, not the client's).
PUBLIC_KEYS = (
    "original_name",
    "content_type",
    "size_bytes",
    "kind",
    "format",
    "width",
    "height",
    "frames",
    "fps",
)


def public_record(record: Mapping[str, Any]) -> dict[str, Any]:
    return {key: record[key] for key in PUBLIC_KEYS if record.get(key) is not None}


def _names(records: Iterable[Mapping[str, Any]]) -> list[str]:
    return [str(record["stored"]) for record in records if record.get("stored")]


class InputFiles:
    """The bytes of stored inputs: files in `directory`, or objects in `outputs` when that
    store keeps inputs (a bucket; see the module docstring)."""

    def __init__(self, directory: Path, outputs: OutputStore | None = None) -> None:
        self.directory = directory
        self.remote = outputs if outputs is not None and outputs.keeps_inputs else None

    async def keep(self, records: Iterable[Mapping[str, Any]]) -> None:
        """Send received files to the store (with one), each streamed from its local file,
        which then goes. StoreError when the store fails (the caller discards the records)."""
        if self.remote is None:
            return
        for record in records:
            path = self.directory / record["stored"]
            await self.remote.put_input(path, record["stored"], record.get("content_type"))
            await anyio.Path(path).unlink()

    async def duplicate(self, source: str, name: str) -> None:
        """Store the input `source` again as `name`: a hard link on local disk, a copy inside
        the store. FileNotFoundError when `source` is stored nowhere."""
        path = anyio.Path(self.directory / source)
        if self.remote is None:
            await anyio.Path(self.directory / name).hardlink_to(path)
            return
        if await path.is_file():  # received before the store kept inputs
            await self.remote.put_input(Path(path), name)
            return
        try:
            await self.remote.copy_input(source, name)
        except NotFound:
            raise FileNotFoundError(source) from None

    @asynccontextmanager
    async def local_file(self, name: str) -> AsyncIterator[Path]:
        """The input `name` as a local file while the block runs: the one in `directory`, or
        one fetched from the store into a temporary file (removed after). From the store:
        NotFound when it does not have it, StoreError when it fails."""
        path = self.directory / name
        if self.remote is None or await anyio.Path(path).is_file():
            yield path
            return
        async with self.remote.reading_input(name) as fetched:
            yield fetched

    async def discard(self, records: Iterable[Mapping[str, Any]]) -> None:
        """Remove stored inputs (those already gone are no error); StoreError when the store
        fails (nothing is lost by trying again)."""
        records = list(records)
        await discard(records, self.directory)
        if self.remote is not None:
            await self.remote.delete_inputs(_names(records))

    async def discard_quietly(self, records: Iterable[Mapping[str, Any]]) -> None:
        """`discard`, for clean-ups after another failure: a store that fails (or takes too
        long) is logged, so the failure that led here is the one reported."""
        records = list(records)
        with anyio.CancelScope(shield=True), anyio.move_on_after(CLEANUP_TIMEOUT_S):
            try:
                await self.discard(records)
            except StoreError as exc:
                log.warning("inputs %s not removed: %s", ", ".join(_names(records)), exc.message)


class InputStore(InputFiles):
    def __init__(
        self,
        db: Database,
        directory: Path,
        max_upload_bytes: int,
        outputs: OutputStore | None = None,
    ) -> None:
        super().__init__(directory, outputs)
        self.db = db
        self.max_upload_bytes = max_upload_bytes

    @asynccontextmanager
    async def receiving(
        self,
        chunks: AsyncIterable[bytes],
        content_type: str | None,
        content_length: str | None,
        expect: Mapping[str, MediaKind],
        *,
        required: bool = True,
    ) -> AsyncIterator[ReceivedForm]:
        """A multipart form, its files stored; they are removed again if the block raises
        (the job they were for was not created). `required=False`: the files in `expect`
        may be absent (a native create call that names an upload id instead)."""
        form = await receive_form(
            chunks,
            content_type,
            expect=expect,
            uploads_dir=self.directory,
            max_upload_bytes=self.max_upload_bytes,
            content_length=content_length,
            required=required,
        )
        try:
            await self.keep(form.files.values())
            yield form
        except BaseException:
            await self.discard_quietly(form.files.values())
            raise

    async def create(self, record: dict[str, Any], client_key: str | None) -> dict[str, Any]:
        """Keep a received file as an upload; the answer a client sees (with its id)."""
        upload_id = str(uuid.uuid4())
        try:
            async with self.db.transaction() as conn:
                await conn.execute(
                    insert(uploads_table).values(
                        id=upload_id,
                        client_key=client_key,
                        kind=record["kind"],
                        record=record,
                        created_at=datetime.now(UTC),
                    )
                )
        except BaseException:
            await self.discard_quietly([record])
            raise
        return {"id": upload_id, **public_record(record)}

    async def _row(self, upload_id: str, caller: Principal | None) -> Any:
        """The upload's row; None also when `caller` may not see it."""
        async with self.db.engine.connect() as conn:
            query = select(uploads_table).where(uploads_table.c.id == upload_id)
            row = (await conn.execute(query)).first()
        if row is None or (caller is not None and not caller.can_see(row.client_key)):
            return None
        return row

    async def get(self, upload_id: str, caller: Principal | None = None) -> dict[str, Any]:
        row = await self._row(upload_id, caller)
        if row is None:
            raise NotFound(f"no upload with id {upload_id!r}")
        created = row.created_at if row.created_at.tzinfo else row.created_at.replace(tzinfo=UTC)
        return {"id": row.id, **public_record(row.record), "created_at": created.isoformat()}

    async def delete(self, upload_id: str, caller: Principal | None = None) -> None:
        row = await self._row(upload_id, caller)
        if row is None:
            raise NotFound(f"no upload with id {upload_id!r}")
        if self.remote is not None:
            # Before the row: a store that fails leaves the upload whole, to delete again.
            await self.remote.delete_inputs(_names([row.record]))
        async with self.db.transaction() as conn:
            await conn.execute(delete(uploads_table).where(uploads_table.c.id == upload_id))
        await discard([row.record], self.directory)

    async def copy_for_job(
        self, field: str, upload_id: str, kind: MediaKind, caller: Principal | None = None
    ) -> dict[str, Any]:
        """A job's own record of an upload: the same bytes under a new name (a hard link, or
        a copy inside the store). `field` names the request field in errors."""
        row = await self._row(upload_id, caller)
        if row is None:
            raise InvalidInput(field, f"no upload with id {upload_id!r} (POST /api/uploads)")
        record = dict(row.record)
        if record["kind"] != kind:
            raise InvalidInput(field, f"upload {upload_id} is {record['kind']}, not {kind}")
        stored = f"{uuid.uuid4().hex}{Path(record['stored']).suffix}"
        try:
            await self.duplicate(record["stored"], stored)
        except FileNotFoundError:
            raise InvalidInput(field, f"upload {upload_id} is no longer stored") from None
        record.update(stored=stored, upload_name=f"fastwan_{stored}")
        return record
