"""`python -m proxy.migrations revision "what changed"`: draft the next revision.

The draft is Alembic's autogenerate output: the difference between `metadata` and a database
at the current head (a scratch in-memory SQLite one unless `--database-url` names another),
written to `versions/` under the next number. The database is only read: the transaction
that brought it to head is rolled back. Autogenerate misses some changes (a renamed column
reads as a drop and an add, for one) and knows nothing of data: read the draft, then run
`ruff format` on it.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import sys
from pathlib import Path

from alembic import command
from alembic.script import Script
from sqlalchemy import Connection

from proxy.db import Database
from proxy.migrations import HERE, config, in_process_lock, schema_differences, upgrade_to_head

# alembic_version.version_num is VARCHAR(32).
MAX_REVISION_ID = 32


def next_revision_id(head: str | None, message: str) -> str:
    """ "0003_what_changed" after "0002_...": numbered, so the files sort in order."""
    number = int(head.split("_", 1)[0]) + 1 if head else 1
    slug = re.sub(r"[^a-z0-9]+", "_", message.lower()).strip("_") or "revision"
    return f"{number:04d}_{slug}"[:MAX_REVISION_ID].rstrip("_")


def _draft(connection: Connection, schema: str | None, message: str, into: Path) -> Path | None:
    head = upgrade_to_head(connection, schema)
    if not schema_differences(connection):
        return None
    cfg = config(connection)
    # The revision id already carries the slug; Alembic's default would repeat it.
    cfg.set_main_option("file_template", "%%(rev)s")
    if into != HERE / "versions":
        # Alembic writes only into a folder it reads revisions from (tests draft elsewhere).
        cfg.set_main_option("path_separator", "os")
        locations = f"{HERE / 'versions'}{os.pathsep}{into}".replace("%", "%%")
        cfg.set_main_option("version_locations", locations)
    script = command.revision(
        cfg,
        message=message,
        autogenerate=True,
        rev_id=next_revision_id(head, message),
        version_path=str(into),
    )
    assert isinstance(script, Script), script  # one head, one file
    return Path(script.path)


async def draft_revision(
    message: str, database_url: str = "sqlite+aiosqlite://", into: Path | None = None
) -> Path | None:
    """Write the next revision's draft into `into` (default `versions/`); None if `metadata`
    already matches head and there is nothing to write."""
    db = Database(database_url)
    try:
        async with in_process_lock(), db.engine.connect() as conn:
            # Never committed: leaving the block rolls the upgrade back.
            return await conn.run_sync(_draft, db.schema, message, into or HERE / "versions")
    finally:
        await db.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m proxy.migrations", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    revision = commands.add_parser("revision", help="draft the next revision from `metadata`")
    revision.add_argument("message", help='what the revision changes ("add foo to jobs")')
    revision.add_argument(
        "--database-url",
        default="sqlite+aiosqlite://",
        help="compare against this database instead of a scratch SQLite one (not changed)",
    )
    args = parser.parse_args(argv)
    path = asyncio.run(draft_revision(args.message, args.database_url))
    if path is None:
        print("the tables match the newest revision: nothing to draft")
        return 1
    print(f"drafted {path}: read it, then `ruff format` it")
    return 0


if __name__ == "__main__":
    sys.exit(main())
