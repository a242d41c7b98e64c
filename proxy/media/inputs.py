"""Input files for jobs (the image of image-to-video, the video of video-to-video): received
once, here, for every surface.

Two ways in, one record shape (see `proxy.media.uploads`):
- with the job: a multipart create call. `receiving(...)` streams the form to disk and, if
  anything fails before the job exists, removes what it stored.
- ahead of the job: `POST /api/uploads` stores a file as a reusable upload with an id (a row in
  `uploads`); a job that names the id gets its own hard-linked copy, so deleting the job or the
  upload never takes the file from under the other.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterable, AsyncIterator, Mapping
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import anyio
from sqlalchemy import Column, DateTime, String, Table, delete, insert, select

from proxy.auth import Principal
from proxy.db import Database, JSONType, metadata
from proxy.errors import InvalidInput, NotFound
from proxy.media.uploads import MediaKind, ReceivedForm, discard, receive_form

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


class InputStore:
    def __init__(self, db: Database, directory: Path, max_upload_bytes: int) -> None:
        self.db = db
        self.directory = directory
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
            yield form
        except BaseException:
            await self.discard(form.files.values())
            raise

    async def discard(self, records: Any) -> None:
        await discard(records, self.directory)

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
            await self.discard([record])
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
        async with self.db.transaction() as conn:
            await conn.execute(delete(uploads_table).where(uploads_table.c.id == upload_id))
        await self.discard([row.record])

    async def copy_for_job(
        self, field: str, upload_id: str, kind: MediaKind, caller: Principal | None = None
    ) -> dict[str, Any]:
        """A job's own record of an upload: a hard link to the same bytes under a new name.
        `field` names the request field in errors."""
        row = await self._row(upload_id, caller)
        if row is None:
            raise InvalidInput(field, f"no upload with id {upload_id!r} (POST /api/uploads)")
        record = dict(row.record)
        if record["kind"] != kind:
            raise InvalidInput(field, f"upload {upload_id} is {record['kind']}, not {kind}")
        source = anyio.Path(self.directory / record["stored"])
        stored = f"{uuid.uuid4().hex}{Path(record['stored']).suffix}"
        try:
            await anyio.Path(self.directory / stored).hardlink_to(source)
        except FileNotFoundError:
            raise InvalidInput(field, f"upload {upload_id} is no longer stored") from None
        record.update(stored=stored, upload_name=f"fastwan_{stored}")
        return record
