"""Owners and uploads: the `uploads` table, and `client_key` on batches and scene sessions.

The `uploads` table is `proxy.media.inputs`'s. `client_key` records who created each batch
and scene session, as jobs already have it.

Existing batches and sessions get NULL (no recorded owner), as rows created without a
client key do.

Revision ID: 0002_owners_and_uploads
Revises: 0001_baseline
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0002_owners_and_uploads"
down_revision: str | None = "0001_baseline"
branch_labels: str | None = None
depends_on: str | None = None

# Frozen like the baseline's: JSON everywhere, JSONB on PostgreSQL.
JSONType = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")

OWNED = ("batches", "scene_sessions")


def upgrade() -> None:
    op.create_table(
        "uploads",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("client_key", sa.String(128)),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("record", JSONType, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_uploads_client_key", "uploads", ["client_key"])
    op.create_index("ix_uploads_created_at", "uploads", ["created_at"])

    # Batch mode: SQLite alters tables only in limited ways, and Alembic then decides per
    # operation whether a plain ALTER does (adding a nullable column does) or the table must
    # be copied; elsewhere it is a plain ALTER TABLE.
    for table in OWNED:
        with op.batch_alter_table(table) as batch:
            batch.add_column(sa.Column("client_key", sa.String(128), nullable=True))
            batch.create_index(f"ix_{table}_client_key", ["client_key"])


def downgrade() -> None:
    for table in OWNED:
        with op.batch_alter_table(table) as batch:
            batch.drop_index(f"ix_{table}_client_key")
            batch.drop_column("client_key")
    op.drop_table("uploads")
