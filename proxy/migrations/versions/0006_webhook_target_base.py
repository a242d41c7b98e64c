"""Callback URLs are absolute: each webhook target keeps the address its create call came to
(`base_url`), so a payload's URLs resolve where no PUBLIC_URL is set.

Revision ID: 0006_webhook_target_base
Revises: 0005_idempotency_keys
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0006_webhook_target_base"
down_revision: str | None = "0005_idempotency_keys"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    with op.batch_alter_table("webhook_targets") as batch:
        batch.add_column(sa.Column("base_url", sa.String(2048)))


def downgrade() -> None:
    with op.batch_alter_table("webhook_targets") as batch:
        batch.drop_column("base_url")
