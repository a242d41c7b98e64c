"""Safe retries: the `idempotency_keys` table (`proxy.idempotency`).

One row per API key (hashed) and Idempotency-Key: the route and body fingerprint of the first
request, and its answer once it has one.

Revision ID: 0005_idempotency_keys
Revises: 0004_webhooks
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0005_idempotency_keys"
down_revision: str | None = "0004_webhooks"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.create_table(
        "idempotency_keys",
        sa.Column("scope", sa.String(64), primary_key=True),
        sa.Column("key", sa.String(255), primary_key=True),
        sa.Column("route", sa.String(512), nullable=False),
        sa.Column("fingerprint", sa.String(64), nullable=False),
        sa.Column("status", sa.Integer),
        sa.Column("content_type", sa.String(128)),
        sa.Column("body", sa.LargeBinary),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_idempotency_keys_created_at", "idempotency_keys", ["created_at"])


def downgrade() -> None:
    op.drop_index("ix_idempotency_keys_created_at", "idempotency_keys")
    op.drop_table("idempotency_keys")
