"""One proxy per data dir.

Two proxies on one data dir would each sweep the other's partial uploads and staging files,
and fight over its kept secrets and client id. So `python -m proxy serve/up` takes, before it
starts anything (the stand-in included), an exclusive `flock` on `DATA_DIR/proxy.lock` (and
beside a SQLite file kept elsewhere: SQLite is one process's database), with this process's
pid and start time written into it for the next one to quote.

The kernel releases it when the process ends, however it ends, so a killed proxy never leaves
a stale lock behind. A second process fails at once (no waiting) with a message naming the
holder. Apps built in-process (tests, benchmarks) take none: only the command line does.

Several proxies on one PostgreSQL database are replicas, each with its own data dir: they
share the work through leases in the database (`proxy.replicas`), not a lock.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import make_url

from proxy.settings import Settings

LOCK_NAME = "proxy.lock"


class InstanceError(RuntimeError):
    """This proxy cannot make sure it is the only one; the message says why."""


class AlreadyServing(InstanceError):
    """Another proxy holds this data dir (or SQLite database); the message names it."""


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
                "Stop it first, or give this one its own DATA_DIR "
                "(replicas on PostgreSQL each have one)."
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
