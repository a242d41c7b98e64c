"""Learned node durations: the `node_timings` table (`proxy.jobs.timings`).

One row per backend, workflow, size class and node: the moving average of that node's
measured duration, which the progress bar and the ETA weigh nodes by.

Revision ID: 0003_node_timings
Revises: 0002_owners_and_uploads
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0003_node_timings"
down_revision: str | None = "0002_owners_and_uploads"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.create_table(
        "node_timings",
        sa.Column("backend", sa.String(256), primary_key=True),
        sa.Column("workflow", sa.String(128), primary_key=True),
        sa.Column("size_class", sa.String(64), primary_key=True),
        sa.Column("node_id", sa.String(64), primary_key=True),
        sa.Column("class_type", sa.String(128), nullable=False),
        sa.Column("work", sa.Float, nullable=False),
        sa.Column("seconds", sa.Float, nullable=False),
        sa.Column("samples", sa.Integer, nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("node_timings")
