"""Outputs in an S3-compatible bucket (OUTPUT_STORE=s3://bucket/prefix): AWS S3, MinIO,
Ceph, R2 and the like, through aiobotocore. Every replica of the proxy that names the same
bucket serves the same outputs.

- **Writing.** An output is first written to a staging file under DATA_DIR (ComfyUI's
  `/view` is streamed there and PyAV probes it), then sent to the bucket PART_BYTES at a time
  (a multipart upload; one PUT for a smaller file), read from the file part by part: never
  whole in memory. A failed or cancelled upload is aborted; one left behind by a process that
  died is aborted at a later start, once older than STALE_UPLOAD_S.
- **Reading.** HEAD says what an object is (404: NotFound); downloads and zips stream GETs
  (with a byte range where asked); redirects carry presigned GET URLs. Each GET names the
  ETag that HEAD saw, so bytes of two versions are never spliced together.
- **Inputs.** With a bucket, the images and videos jobs are made from are kept there too, as
  `<prefix>/inputs/<stored name>` (sent like outputs; a job's own copy is a server-side copy),
  so whichever replica hands a job to ComfyUI can fetch its input (`reading_input`).
- **Errors.** Every botocore error is translated in `_calling` into a StoreError (502) or
  StoreUnavailable (503) whose message names the store and what to check.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import aiohttp
import anyio
from aiobotocore.config import AioConfig
from aiobotocore.session import AioSession
from botocore.exceptions import (
    ClientError,
    ConnectionError,
    CredentialRetrievalError,
    HTTPClientError,
    IncompleteReadError,
    NoCredentialsError,
    PartialCredentialsError,
)

from proxy.errors import NotFound, ProxyError
from proxy.media.probe import content_type_of
from proxy.media.storage import (
    ObjectStream,
    OutputStore,
    StoredFile,
    StoreError,
    StoreUnavailable,
    checked_name,
)
from proxy.settings import Settings

if TYPE_CHECKING:
    from types_aiobotocore_s3 import S3Client
    from types_aiobotocore_s3.type_defs import CompletedPartTypeDef

log = logging.getLogger("proxy.media")

# Parts of a multipart upload: S3 wants at least 5 MiB (but for the last); 8 MiB is what the
# AWS CLI sends. One part is what an upload holds in memory.
PART_BYTES = 8 * 1024 * 1024
# An unfinished multipart upload older than this was left by a process that died mid-upload
# (one output's upload takes seconds to minutes); it is aborted at start.
STALE_UPLOAD_S = 3600.0
# Staging folders of processes that stopped without cleaning up, removed at start.
STALE_STAGING_S = 24 * 3600.0
CONNECT_TIMEOUT_S = 5.0
# The start waits this long for the bucket check (and again for the upload sweep).
STARTUP_CHECK_S = 10.0
READ_TIMEOUT_S = 60.0
# Cleanups after a failure (aborting an upload) get this long, even when cancelled.
CLEANUP_TIMEOUT_S = 10.0
# Downloads streamed through the proxy and zips each hold one connection while they run.
MAX_CONNECTIONS = 64
# Inputs live under the store's prefix beside the outputs; an output's name never holds a "/",
# so none is ever taken for one of them.
INPUTS_FOLDER = "inputs/"
# The largest object one CopyObject copies (S3's limit); a larger one is copied in parts.
COPY_MAX_BYTES = 5 * 1024 * 1024 * 1024
# Error codes that say the credentials (or their rights) are wrong.
REFUSED_CODES = {
    "AccessDenied",
    "AccountProblem",
    "AllAccessDisabled",
    "ExpiredToken",
    "InvalidAccessKeyId",
    "InvalidSecurity",
    "InvalidToken",
    "SignatureDoesNotMatch",
    "TokenRefreshRequired",
}
# Error codes that say the bucket lives in another region than the one signed for.
REGION_CODES = {"AuthorizationHeaderMalformed", "PermanentRedirect", "IllegalLocationConstraint"}


def content_disposition(name: str, *, inline: bool) -> str:
    kind = "inline" if inline else "attachment"
    quoted = quote(name)
    return f'{kind}; filename="{name}"' if quoted == name else f"{kind}; filename*=utf-8''{quoted}"


def _status(exc: ClientError) -> int:
    return int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0))


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", "")) or str(_status(exc))


def _warm(session: AioSession, region: str | None) -> str:
    """Load what creating a client reads from disk (service models, config files), so that
    it does not happen on the event loop; returns the region to sign for."""
    loader = session.get_component("data_loader")
    for kind in ("service-2", "endpoint-rule-set-1", "paginators-1"):
        loader.load_service_model("s3", kind)
    for name in ("endpoints", "partitions", "sdk-default-configuration", "_retry"):
        loader.load_data(name)
    found = region or session.get_config_variable("region")
    return str(found) if found else "us-east-1"


def _sweep_staging(root: Path, older_than_s: float) -> Path:
    """Remove staging folders of processes long gone; make this process's own."""
    root.mkdir(parents=True, exist_ok=True)
    cutoff = time.time() - older_than_s
    for child in root.iterdir():
        try:
            if child.is_dir() and child.stat().st_mtime < cutoff:
                shutil.rmtree(child, ignore_errors=True)
        except OSError:
            continue  # another process removed it meanwhile
    return Path(tempfile.mkdtemp(prefix="run-", dir=root))


class S3OutputStore(OutputStore):
    """Outputs as objects `<prefix>/<file name>` in one bucket."""

    def __init__(
        self,
        location: str,
        *,
        staging_dir: Path,
        endpoint_url: str | None = None,
        public_endpoint_url: str | None = None,
        region: str | None = None,
        credentials: dict[str, str] | None = None,
        proxy_downloads: bool = False,
        presign_ttl_s: float = 3600.0,
        part_bytes: int = PART_BYTES,
        stale_upload_s: float = STALE_UPLOAD_S,
        copy_max_bytes: int = COPY_MAX_BYTES,
    ) -> None:
        # `root` is where files wait on their way in (this process's folder, once prepared).
        super().__init__(staging_dir)
        self.location = location
        bucket, _, prefix = location.removeprefix("s3://").partition("/")
        self.bucket = bucket
        self.prefix = f"{prefix}/" if prefix else ""
        self.endpoint_url = endpoint_url
        self.public_endpoint_url = public_endpoint_url
        self.region = region
        self.credentials = credentials or {}
        self.proxy_downloads = proxy_downloads
        self.presign_ttl_s = presign_ttl_s
        self.part_bytes = part_bytes
        self.stale_upload_s = stale_upload_s
        self.copy_max_bytes = copy_max_bytes
        self._staging_root = staging_dir
        self._stack: AsyncExitStack | None = None
        self._client: S3Client | None = None
        self._presigner: S3Client | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> S3OutputStore:
        assert settings.output_store is not None
        credentials = {
            key: value
            for key, value in (
                ("aws_access_key_id", settings.aws_access_key_id),
                ("aws_secret_access_key", settings.aws_secret_access_key),
                ("aws_session_token", settings.aws_session_token),
            )
            if value
        }
        return cls(
            settings.output_store,
            staging_dir=settings.data_dir / "s3-staging",
            endpoint_url=settings.s3_endpoint_url,
            public_endpoint_url=settings.s3_public_endpoint_url,
            region=settings.aws_region,
            credentials=credentials,
            proxy_downloads=settings.s3_proxy_downloads,
            presign_ttl_s=settings.s3_presign_ttl_s,
        )

    @property
    def where(self) -> str:
        """The store as a person recognises it in a message."""
        if self.endpoint_url:
            return f"{self.location} at {self.endpoint_url}"
        return f"{self.location} (AWS S3, {self.region or 'default region'})"

    @property
    def client(self) -> S3Client:
        if self._client is None:
            raise StoreUnavailable(f"The output store {self.where} is not open")
        return self._client

    def key(self, filename: str) -> str:
        return self.prefix + checked_name(filename)

    # -- lifecycle --------------------------------------------------------------------------

    async def prepare(self) -> None:
        self.root = await anyio.to_thread.run_sync(
            _sweep_staging, self._staging_root, STALE_STAGING_S
        )
        session = AioSession()
        self.region = await anyio.to_thread.run_sync(_warm, session, self.region)
        config = AioConfig(
            signature_version="s3v4",
            connect_timeout=CONNECT_TIMEOUT_S,
            read_timeout=READ_TIMEOUT_S,
            retries={"max_attempts": 3, "mode": "standard"},
            max_pool_connections=MAX_CONNECTIONS,
            # Checksums only where the API demands them: several S3-compatible stores refuse
            # the trailing checksums botocore sends by default.
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
        )
        stack = AsyncExitStack()

        async def client_for(endpoint_url: str | None) -> S3Client:
            return await stack.enter_async_context(
                session.create_client(
                    "s3",
                    endpoint_url=endpoint_url,
                    region_name=self.region,
                    config=config,
                    aws_access_key_id=self.credentials.get("aws_access_key_id"),
                    aws_secret_access_key=self.credentials.get("aws_secret_access_key"),
                    aws_session_token=self.credentials.get("aws_session_token"),
                )
            )

        try:
            self._client = await client_for(self.endpoint_url)
            # Presigning needs no connection; its URLs must name the address clients reach.
            self._presigner = self._client
            if self.public_endpoint_url:
                self._presigner = await client_for(self.public_endpoint_url)
        except BaseException:
            await stack.aclose()
            raise
        self._stack = stack
        await self._look_at_bucket()

    async def _look_at_bucket(self) -> None:
        """Say at start whether the bucket can be used (the start goes on either way: a store
        that comes back serves without a restart), and abort uploads that died with an
        earlier process."""
        with anyio.move_on_after(STARTUP_CHECK_S) as waited:
            try:
                await self._check_bucket("find the bucket")
            except ProxyError as exc:
                log.error("%s (outputs cannot be stored or served until then)", exc.message)
                return
        if waited.cancelled_caught:
            log.error(
                "The output store %s did not answer within %.0f s: check S3_ENDPOINT_URL and "
                "that the store is running (outputs cannot be stored or served until then)",
                self.where,
                STARTUP_CHECK_S,
            )
            return
        log.info("outputs are stored in %s", self.where)
        with anyio.move_on_after(STARTUP_CHECK_S):
            try:
                await self._abort_stale_uploads()
            except ProxyError as exc:
                log.warning("unfinished uploads not looked for: %s", exc.message)

    async def close(self) -> None:
        if self._stack is not None:
            stack, self._stack = self._stack, None
            self._client = self._presigner = None
            await stack.aclose()
        if self.root != self._staging_root:
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(shutil.rmtree, self.root, True)

    async def _abort_stale_uploads(self) -> None:
        cutoff = datetime.now(UTC) - timedelta(seconds=self.stale_upload_s)
        aborted = 0
        async with self._calling("list its unfinished uploads"):
            paginator = self.client.get_paginator("list_multipart_uploads")
            async for page in paginator.paginate(Bucket=self.bucket, Prefix=self.prefix):
                for upload in page.get("Uploads", []):
                    if "Key" in upload and "UploadId" in upload and "Initiated" in upload:
                        if upload["Initiated"] <= cutoff:
                            await self.client.abort_multipart_upload(
                                Bucket=self.bucket, Key=upload["Key"], UploadId=upload["UploadId"]
                            )
                            aborted += 1
        if aborted:
            log.info("output store: aborted %d unfinished uploads left by earlier runs", aborted)

    # -- errors -----------------------------------------------------------------------------

    @asynccontextmanager
    async def _calling(
        self, action: str, *, missing: Callable[[], ProxyError] | None = None
    ) -> AsyncIterator[None]:
        """Translate what botocore raises while the block talks to the store. `missing`
        makes the error for a 404 that is not the bucket's."""
        try:
            yield
        except ClientError as exc:
            if missing is not None and (_status(exc) == 404 or _code(exc) == "NoSuchKey"):
                if _code(exc) != "NoSuchBucket":
                    await self._check_bucket(action)
                    raise missing() from None
            raise self._translated(exc, action) from None
        except (
            NoCredentialsError,
            PartialCredentialsError,
            CredentialRetrievalError,
            ConnectionError,
            HTTPClientError,
            IncompleteReadError,
            aiohttp.ClientError,
            TimeoutError,
        ) as exc:
            raise self._translated(exc, action) from None

    def _translated(self, exc: Exception, action: str) -> StoreError:
        if isinstance(exc, ClientError):
            return self._refused(exc, action)
        if isinstance(exc, NoCredentialsError | PartialCredentialsError | CredentialRetrievalError):
            return StoreError(
                f"The proxy has no usable credentials for the output store {self.where}: set "
                "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or AWS_PROFILE, or give the "
                "machine a role)"
            )
        return self._unreachable(exc, action)

    def _unreachable(self, exc: BaseException, action: str) -> StoreUnavailable:
        text = str(exc).lower()
        reason = (
            "it did not answer in time"
            if "timeout" in type(exc).__name__.lower() or "timed out" in text
            else "the connection broke off"
            if isinstance(exc, IncompleteReadError) or "closed" in text
            else "no connection"
        )
        return StoreUnavailable(
            f"The output store {self.where} cannot be reached to {action} ({reason}): check "
            "S3_ENDPOINT_URL and that the store is running and reachable from the proxy"
        )

    def _no_bucket(self) -> StoreError:
        return StoreError(
            f"The bucket {self.bucket!r} of the output store {self.where} does not exist: "
            "create it, or correct OUTPUT_STORE (and S3_ENDPOINT_URL)"
        )

    def _refused(self, exc: ClientError, action: str) -> StoreError:
        code, status = _code(exc), _status(exc)
        message = str(exc.response.get("Error", {}).get("Message", "")).strip()
        detail = f"{code}: {message}" if message and message != code else code
        if code in REGION_CODES or status == 301:
            return StoreError(
                f"The output store {self.where} says the bucket is in another region than "
                f"{self.region} ({detail}): set AWS_REGION to the bucket's region"
            )
        if code in REFUSED_CODES or status == 403:
            return StoreError(
                f"The output store {self.where} refused the proxy's credentials to {action} "
                f"({detail}): check AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (and "
                f"AWS_SESSION_TOKEN, AWS_REGION), and that they may read and write "
                f"{self.location}"
            )
        if status >= 500 or code in ("SlowDown", "ServiceUnavailable", "InternalError"):
            return StoreUnavailable(
                f"The output store {self.where} is failing and could not {action} ({detail}): "
                "try again shortly; if this persists, check the store's own health"
            )
        if code == "NoSuchBucket" or (status == 404 and code != "NoSuchKey"):
            return self._no_bucket()  # a 404 where no object was asked for: the bucket's
        if code in ("PreconditionFailed", "InvalidRange"):
            return StoreUnavailable(
                f"An output changed in the store {self.where} while it was read to {action}: "
                "try again"
            )
        return StoreError(f"The output store {self.where} refused to {action} ({detail})")

    async def _check_bucket(self, action: str) -> None:
        """Raise the error that says the bucket is missing (or unreachable), if it is."""
        async with self._calling(action):
            await self.client.head_bucket(Bucket=self.bucket)

    # -- reading ----------------------------------------------------------------------------

    def path_for(self, filename: str) -> Path:
        raise NotImplementedError(f"outputs in {self.location} have no local path")

    async def open(self, filename: str, content_type: str | None = None) -> StoredFile:
        key = self.key(filename)

        def missing() -> ProxyError:
            return NotFound(f"no output named {filename!r}")

        async with self._calling(f"read output {filename}", missing=missing):
            head = await self.client.head_object(Bucket=self.bucket, Key=key)
        return StoredFile(
            filename,
            content_type or head.get("ContentType") or content_type_of(Path(filename)),
            size_bytes=head.get("ContentLength", 0),
            etag=head.get("ETag"),
            modified=head.get("LastModified"),
            remote=self,
        )

    async def open_stream(
        self, file: StoredFile, first: int = 0, last: int | None = None
    ) -> ObjectStream:
        action = f"read output {file.name}"
        options: dict[str, Any] = {}
        if first or last is not None:
            options["Range"] = f"bytes={first}-{'' if last is None else last}"
        if file.etag:
            options["IfMatch"] = file.etag

        def missing() -> ProxyError:
            return NotFound(f"no output named {file.name!r}")

        async with self._calling(action, missing=missing):
            got = await self.client.get_object(
                Bucket=self.bucket, Key=self.key(file.name), **options
            )
        return _Body(self, got["Body"], got.get("ContentLength", 0), action)

    async def presigned_url(self, file: StoredFile, *, inline: bool) -> str:
        presigner = self._presigner or self.client
        async with self._calling(f"sign a download of {file.name}"):
            return await presigner.generate_presigned_url(
                "get_object",
                Params={
                    "Bucket": self.bucket,
                    "Key": self.key(file.name),
                    "ResponseContentType": file.content_type,
                    "ResponseContentDisposition": content_disposition(file.name, inline=inline),
                },
                ExpiresIn=int(self.presign_ttl_s),
            )

    @asynccontextmanager
    async def reading(self, filenames: Sequence[str]) -> AsyncIterator[list[Path]]:
        """Each object fetched into a temporary folder, removed when the block ends."""
        folder = self.root / f"read-{uuid.uuid4().hex}"
        await anyio.Path(folder).mkdir(parents=True)
        try:
            paths: list[Path] = []
            for index, name in enumerate(filenames):
                path = folder / f"{index}-{checked_name(name)}"[:255]
                await self._fetch(await self.open(name), path)
                paths.append(path)
            yield paths
        finally:
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(shutil.rmtree, folder, True)

    async def _fetch(self, file: StoredFile, dest: Path) -> None:
        await _save(await self.open_stream(file), dest)

    # -- writing ----------------------------------------------------------------------------

    @asynccontextmanager
    async def writing(self, filename: str, content_type: str | None = None) -> AsyncIterator[Path]:
        """A staging file; uploaded when the block ends well, removed either way."""
        key = self.key(filename)
        folder = self.root / f"write-{uuid.uuid4().hex}"
        await anyio.Path(folder).mkdir(parents=True)
        path = folder / filename
        try:
            yield path
            content_type = content_type or content_type_of(path)
            await self._upload(path, key, content_type, f"store output {filename}")
        finally:
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(shutil.rmtree, folder, True)

    async def _upload(self, path: Path, key: str, content_type: str, action: str) -> None:
        # Opened here, not in a thread: a cancelled threaded open leaks the file.
        async with anyio.wrap_file(open(path, "rb")) as source:  # noqa: ASYNC230
            chunk = await source.read(self.part_bytes)
            if len(chunk) < self.part_bytes:  # it all fits in one part: one PUT
                async with self._calling(action):
                    await self.client.put_object(
                        Bucket=self.bucket, Key=key, Body=chunk, ContentType=content_type
                    )
                return
            async with self._calling(action):
                created = await self.client.create_multipart_upload(
                    Bucket=self.bucket, Key=key, ContentType=content_type
                )
            upload_id = created["UploadId"]
            try:
                parts: list[CompletedPartTypeDef] = []
                while chunk:
                    number = len(parts) + 1
                    async with self._calling(action):
                        sent = await self.client.upload_part(
                            Bucket=self.bucket,
                            Key=key,
                            UploadId=upload_id,
                            PartNumber=number,
                            Body=chunk,
                        )
                    parts.append({"ETag": sent["ETag"], "PartNumber": number})
                    chunk = await source.read(self.part_bytes)
                async with self._calling(action):
                    await self.client.complete_multipart_upload(
                        Bucket=self.bucket,
                        Key=key,
                        UploadId=upload_id,
                        MultipartUpload={"Parts": parts},
                    )
            except BaseException:
                await self._abort(key, upload_id)
                raise

    async def _abort(self, key: str, upload_id: str) -> None:
        """Abort an upload that failed (or was cancelled): the store keeps none of it."""
        with anyio.CancelScope(shield=True), anyio.move_on_after(CLEANUP_TIMEOUT_S):
            try:
                async with self._calling(f"abort the upload of {key}"):
                    await self.client.abort_multipart_upload(
                        Bucket=self.bucket, Key=key, UploadId=upload_id
                    )
                return
            except ProxyError as exc:
                log.warning("%s; a later start aborts it", exc.message)

    async def delete(self, filenames: list[str]) -> None:
        for name in filenames:
            key = self.key(name)
            async with self._calling(f"delete output {name}"):
                await self.client.delete_object(Bucket=self.bucket, Key=key)

    # -- inputs -----------------------------------------------------------------------------

    keeps_inputs = True

    def input_key(self, name: str) -> str:
        return self.prefix + INPUTS_FOLDER + checked_name(name)

    def _no_input(self, name: str) -> Callable[[], ProxyError]:
        return lambda: NotFound(f"the input {name} is missing from the output store {self.where}")

    async def put_input(self, path: Path, name: str, content_type: str | None = None) -> None:
        key = self.input_key(name)
        await self._upload(path, key, content_type or content_type_of(path), f"store input {name}")

    async def copy_input(self, source: str, name: str) -> None:
        """A server-side copy: the bytes never pass through the proxy."""
        action = f"copy input {source}"
        source_key, key = self.input_key(source), self.input_key(name)
        async with self._calling(action, missing=self._no_input(source)):
            head = await self.client.head_object(Bucket=self.bucket, Key=source_key)
        size = head.get("ContentLength", 0)
        if size > self.copy_max_bytes:
            await self._copy_in_parts(source_key, key, size, head.get("ContentType"), action)
            return
        async with self._calling(action, missing=self._no_input(source)):
            await self.client.copy_object(
                Bucket=self.bucket, Key=key, CopySource={"Bucket": self.bucket, "Key": source_key}
            )

    async def _copy_in_parts(
        self, source_key: str, key: str, size: int, content_type: str | None, action: str
    ) -> None:
        async with self._calling(action):
            created = await self.client.create_multipart_upload(
                Bucket=self.bucket, Key=key, ContentType=content_type or "application/octet-stream"
            )
        upload_id = created["UploadId"]
        try:
            parts: list[CompletedPartTypeDef] = []
            for first in range(0, size, self.copy_max_bytes):
                number = len(parts) + 1
                last = min(first + self.copy_max_bytes, size) - 1
                async with self._calling(action):
                    sent = await self.client.upload_part_copy(
                        Bucket=self.bucket,
                        Key=key,
                        UploadId=upload_id,
                        PartNumber=number,
                        CopySource={"Bucket": self.bucket, "Key": source_key},
                        CopySourceRange=f"bytes={first}-{last}",
                    )
                parts.append({"ETag": sent["CopyPartResult"]["ETag"], "PartNumber": number})
            async with self._calling(action):
                await self.client.complete_multipart_upload(
                    Bucket=self.bucket,
                    Key=key,
                    UploadId=upload_id,
                    MultipartUpload={"Parts": parts},
                )
        except BaseException:
            await self._abort(key, upload_id)
            raise

    @asynccontextmanager
    async def reading_input(self, name: str) -> AsyncIterator[Path]:
        """The input fetched into a temporary folder, removed when the block ends."""
        action = f"read input {name}"
        folder = self.root / f"input-{uuid.uuid4().hex}"
        await anyio.Path(folder).mkdir(parents=True)
        try:
            path = folder / checked_name(name)
            async with self._calling(action, missing=self._no_input(name)):
                got = await self.client.get_object(Bucket=self.bucket, Key=self.input_key(name))
            await _save(_Body(self, got["Body"], got.get("ContentLength", 0), action), path)
            yield path
        finally:
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(shutil.rmtree, folder, True)

    async def delete_inputs(self, names: Sequence[str]) -> None:
        for name in names:
            key = self.input_key(name)
            async with self._calling(f"delete input {name}"):
                await self.client.delete_object(Bucket=self.bucket, Key=key)


async def _save(stream: ObjectStream, dest: Path) -> None:
    """Write what `stream` delivers to the file `dest`, a MiB at a time; closes the stream."""
    try:
        # Opened here, not in a thread: a cancelled threaded open leaks the file.
        async with anyio.wrap_file(open(dest, "wb")) as out:  # noqa: ASYNC230
            while chunk := await stream.read(1024 * 1024):
                await out.write(chunk)
    finally:
        await stream.aclose()


class _Body:
    """An object's bytes as a GET streams them, in reads of the size asked."""

    def __init__(self, store: S3OutputStore, body: Any, length: int, action: str) -> None:
        self._store = store
        self._body = body
        self.length = length
        self._action = action

    async def read(self, max_bytes: int) -> bytes:
        pieces: list[bytes] = []
        got = 0
        while got < max_bytes:
            async with self._store._calling(self._action):
                piece: bytes = await self._body.read(max_bytes - got)
            if not piece:
                break
            pieces.append(piece)
            got += len(piece)
        return b"".join(pieces)

    async def aclose(self) -> None:
        await self._body.aclose()
