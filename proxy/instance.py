"""One proxy per data dir and per database.

Two proxies on one SQLite file would both dispatch the same queued jobs, each sweep the
other's partial uploads and fight over the ComfyUI client id; on one PostgreSQL schema they
would both claim jobs and re-attach to each other's prompts. So `python -m proxy serve/up`
takes, before it starts anything (the stand-in included):

- an exclusive `flock` on `DATA_DIR/proxy.lock` (and beside a SQLite file kept elsewhere),
  with this process's pid and start time written into it for the next one to quote;
- with PostgreSQL, a session advisory lock (`pg_try_advisory_lock`) on a key derived from the
  database and schema, held on a connection of its own for the life of the process.

Both are released by the kernel or the server when the process ends, however it ends, so a
killed proxy never leaves a stale lock behind. A second process fails at once (no waiting)
with a message naming the holder. Apps built in-process (tests, benchmarks) take neither:
only the command line does.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import socket
from collections.abc import AsyncIterator, Iterator
from contextlib import ExitStack, asynccontextmanager, contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import make_url, text
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from proxy.settings import Settings

LOCK_NAME = "proxy.lock"
# PostgreSQL's application_name is cut at 63 bytes.
_APP_NAME_MAX = 63


class InstanceError(RuntimeError):
    """This proxy cannot make sure it is the only one; the message says why."""


class AlreadyServing(InstanceError):
    """Another proxy holds this data dir or database; the message names it."""


def _holder_text(info: dict[str, Any]) -> str:
    parts = []
    if info.get("pid"):
        parts.append(f"pid {info['pid']}")
    if info.get("host") and info.get("host") != socket.gethostname():
        parts.append(f"on {info['host']}")
    if info.get("started"):
        parts.append(f"started {info['started']}")
    return ", ".join(parts) or "which has not yet said who it is"


def _read_holder(fd: int) -> dict[str, Any]:
    try:
        data = os.pread(fd, 4096, 0)
        info = json.loads(data.decode()) if data.strip() else {}
    except (OSError, ValueError):
        return {}
    return info if isinstance(info, dict) else {}


@contextmanager
def file_lock(path: Path, what: str) -> Iterator[None]:
    """Hold an exclusive lock on `path` (created if need be), or raise `AlreadyServing`."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        # Python opens descriptors non-inheritable: a ComfyUI or stand-in child never holds it.
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise InstanceError(f"cannot create the lock file {path} for {what}: {exc}") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder_text(_read_holder(fd))
            raise AlreadyServing(
                f"another proxy ({holder}) is already serving {what} (it holds {path}). "
                "Stop it first, or give this one its own DATA_DIR and database."
            ) from None
        me = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started": datetime.now(UTC).astimezone().isoformat(timespec="seconds"),
        }
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(me) + "\n").encode(), 0)
        try:
            yield
        finally:
            # Emptied, not deleted: a deleted lock file lets a newcomer lock a fresh file
            # while a third process still waits on the old one. Closing releases the lock.
            os.ftruncate(fd, 0)
    finally:
        os.close(fd)


def _sqlite_file(settings: Settings) -> Path | None:
    url = make_url(settings.db_url)
    if not url.drivername.startswith("sqlite") or url.database in (None, "", ":memory:"):
        return None
    return Path(url.database).resolve()


@contextmanager
def hold_data_dir(settings: Settings) -> Iterator[None]:
    """The file locks: DATA_DIR, and a SQLite database kept outside it."""
    data_dir = settings.data_dir.resolve()
    with ExitStack() as stack:
        stack.enter_context(file_lock(data_dir / LOCK_NAME, f"DATA_DIR={data_dir}"))
        database = _sqlite_file(settings)
        if database is not None and not database.is_relative_to(data_dir):
            lock = database.with_name(database.name + ".lock")
            stack.enter_context(file_lock(lock, f"the database {database}"))
        yield


def advisory_key(database: str, schema: str | None) -> int:
    """A signed 64-bit key for `pg_try_advisory_lock`, the same for every proxy that names
    the same database and schema (and unlikely to be any other program's)."""
    digest = hashlib.blake2b(
        f"fastwan-proxy\0{database}\0{schema or 'public'}".encode(), digest_size=8
    ).digest()
    return int.from_bytes(digest, "big", signed=True)


_HOLDER_QUERY = text(
    """
    SELECT a.application_name, a.client_addr::text AS client_addr, a.backend_start
    FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
    WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1
      AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
      AND l.classid::bigint = :high AND l.objid::bigint = :low
    """
)


@asynccontextmanager
async def hold_database(settings: Settings) -> AsyncIterator[None]:
    """With PostgreSQL, hold its advisory lock for as long as the context lasts; with SQLite,
    nothing (its file lock is `hold_data_dir`'s)."""
    url = make_url(settings.db_url)
    if not url.drivername.startswith("postgresql"):
        yield
        return
    schema_value = url.query.get("schema")
    schema = str(schema_value) if schema_value else None
    url = url.difference_update_query(["schema"])
    where = f"the database {url.database!r}" + (f" schema {schema!r}" if schema else "")
    key = advisory_key(url.database or "", schema)
    # What a refused proxy reads about us (its start time is the session's backend_start).
    name = f"fastwan-proxy pid={os.getpid()} host={socket.gethostname()}"[:_APP_NAME_MAX]
    engine = create_async_engine(
        url, poolclass=NullPool, connect_args={"server_settings": {"application_name": name}}
    )
    try:
        try:
            # Autocommit: a session lock needs no transaction, and one left open for the
            # process's life would hold back vacuum.
            conn = await (await engine.connect()).execution_options(isolation_level="AUTOCOMMIT")
        except (OSError, SQLAlchemyError) as exc:
            raise InstanceError(
                f"could not reach {where} to check that no other proxy uses it: {exc}"
            ) from None
        try:
            got = (
                await conn.execute(text("SELECT pg_try_advisory_lock(:key)"), {"key": key})
            ).scalar_one()
            if not got:
                row = (
                    (
                        await conn.execute(
                            _HOLDER_QUERY,
                            {"high": (key >> 32) & 0xFFFFFFFF, "low": key & 0xFFFFFFFF},
                        )
                    )
                    .mappings()
                    .first()
                )
                raise AlreadyServing(
                    f"another proxy ({_pg_holder(row)}) is already serving {where}. "
                    "Stop it first, or give this one another database or ?schema=."
                )
            yield
        finally:
            await conn.close()  # ends the session, which releases the lock
    finally:
        await engine.dispose()


def _pg_holder(row: Any) -> str:
    if row is None:
        return "which has just let go; try again"
    info: dict[str, Any] = {}
    app = str(row["application_name"] or "")
    for part in app.split():
        key, _, value = part.partition("=")
        if key in ("pid", "host") and value:
            info[key] = value
    if row["backend_start"] is not None:
        info["started"] = row["backend_start"].astimezone().isoformat(timespec="seconds")
    text_ = _holder_text(info)
    if not info.get("pid") and row["client_addr"]:
        text_ += f" from {row['client_addr']}"
    return text_
