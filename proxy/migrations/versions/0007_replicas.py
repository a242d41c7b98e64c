"""Replicas on PostgreSQL: `replicas`, `backend_leases` (`proxy.replicas.leases`),
`shared_secrets` (`proxy.replicas.secrets`), and the replica running each model download
(`model_downloads.runner`).

A row per live replica (its heartbeat), a row per ComfyUI backend (which replica drives it,
until when, with which websocket client id), and the secrets all replicas sign with. SQLite
gets the tables too (one schema for both engines) and leaves them empty.

Revision ID: 0007_replicas
Revises: 0006_webhook_target_base
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0007_replicas"
down_revision: str | None = "0006_webhook_target_base"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.create_table(
        "replicas",
        sa.Column("id", sa.String(128), primary_key=True),
        sa.Column("host", sa.String(255), nullable=False),
        sa.Column("pid", sa.Integer, nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("seen_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_replicas_seen_at", "replicas", ["seen_at"])
    op.create_table(
        "backend_leases",
        sa.Column("backend", sa.String(512), primary_key=True),
        sa.Column("owner", sa.String(128), nullable=False),
        sa.Column("client_id", sa.String(64), nullable=False),
        sa.Column("connected", sa.Boolean, nullable=False),
        sa.Column("acquired_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "shared_secrets",
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("value", sa.Text, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )

    # A model_downloads table made from today's code (a store's own set-up) has it already.
    columns = {c["name"] for c in sa.inspect(op.get_bind()).get_columns("model_downloads")}
    if "runner" not in columns:
        with op.batch_alter_table("model_downloads") as batch:
            batch.add_column(sa.Column("runner", sa.String(128)))


def downgrade() -> None:
    with op.batch_alter_table("model_downloads") as batch:
        batch.drop_column("runner")
    op.drop_table("shared_secrets")
    op.drop_table("backend_leases")
    op.drop_index("ix_replicas_seen_at", "replicas")
    op.drop_table("replicas")
