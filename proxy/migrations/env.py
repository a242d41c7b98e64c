"""Alembic's environment script: runs the revisions on the connection it is handed.

Alembic executes this file for every command. `proxy.migrations` (at each start) and
`python -m proxy.migrations` put an open connection, already in a transaction and scoped to
the right schema, in `config.attributes["connection"]`; there is no URL to connect to here,
so the bare `alembic` command line, which has none to give, is refused with a pointer.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection

from proxy.migrations import context_options

connection = context.config.attributes.get("connection")
if not isinstance(connection, Connection):
    raise RuntimeError(
        "proxy migrations run on a connection the proxy opens: use Database.migrate() (every "
        "start does) or `python -m proxy.migrations`, not the alembic command line"
    )
context.configure(connection=connection, **context_options())
# The caller's transaction is already open, so this one is only Alembic's bookkeeping: the
# caller commits, or rolls back everything on failure.
with context.begin_transaction():
    context.run_migrations()
