"""Baseline: the schema as `metadata.create_all` made it before migrations existed.

A frozen copy of the tables then (jobs, batches, scene_sessions, prompt_sessions,
model_downloads), written out rather than imported: later edits to the stores' `Table`s must
not change what this revision creates. A database made by that older code has these tables
and no `alembic_version`; `proxy.migrations` stamps it at this revision instead of running it.
One with only some of them (from before a store existed, or a single store's test set-up) runs
it, and then it creates only the missing ones: a table that is there is kept as it is, and the
comparison with `metadata` after the upgrade fails the start if it is not what it should be.

Revision ID: 0001_baseline
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0001_baseline"
down_revision: str | None = None
branch_labels: str | None = None
depends_on: str | None = None

# `proxy.db.JSONType` as it was: JSON everywhere, JSONB on PostgreSQL.
JSONType = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def upgrade() -> None:
    # Only what is missing (see above); on a fresh database, everything.
    existing = set(sa.inspect(op.get_bind()).get_table_names())
    tables = {
        "jobs": _jobs,
        "batches": _batches,
        "scene_sessions": _scene_sessions,
        "prompt_sessions": _prompt_sessions,
        "model_downloads": _model_downloads,
    }
    for name, create in tables.items():
        if name not in existing:
            create()


def _jobs() -> None:
    op.create_table(
        "jobs",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("workflow", sa.String(128), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("params", JSONType, nullable=False),
        sa.Column("request", JSONType, nullable=False),
        sa.Column("inputs", JSONType, nullable=False),
        sa.Column("surface", sa.String(32), nullable=False),
        sa.Column("client_key", sa.String(128)),
        sa.Column("batch_id", sa.String(64)),
        sa.Column("label", sa.String(256)),
        sa.Column("backend", sa.String(256)),
        sa.Column("prompt_id", sa.String(64)),
        sa.Column("progress", sa.Float, nullable=False),
        sa.Column("stage", sa.String(64)),
        sa.Column("step", sa.Integer),
        sa.Column("steps", sa.Integer),
        sa.Column("eta_s", sa.Float),
        sa.Column("message", sa.Text),
        sa.Column("error", sa.Text),
        sa.Column("outputs", JSONType, nullable=False),
        sa.Column("attempt", sa.Integer, nullable=False),
        sa.Column("attempts", JSONType, nullable=False),
        sa.Column("retries", sa.Integer, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True)),
        sa.Column("finished_at", sa.DateTime(timezone=True)),
    )
    # The names `index=True` gives (SQLAlchemy's default "ix_<table>_<column>").
    for column in ("status", "client_key", "batch_id", "prompt_id", "created_at"):
        op.create_index(f"ix_jobs_{column}", "jobs", [column])


def _batches() -> None:
    op.create_table(
        "batches",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("surface", sa.String(32), nullable=False),
        sa.Column("workflow", sa.String(128), nullable=False),
        sa.Column("params", JSONType, nullable=False),
        sa.Column("items", JSONType, nullable=False),
        sa.Column("session_id", sa.String(64)),
        sa.Column("final", JSONType),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_batches_session_id", "batches", ["session_id"])
    op.create_index("ix_batches_created_at", "batches", ["created_at"])


def _scene_sessions() -> None:
    # Plain JSON here and in prompt_sessions: JSONB would reorder what people wrote.
    op.create_table(
        "scene_sessions",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("scenes", sa.JSON, nullable=False),
        sa.Column("params", sa.JSON, nullable=False),
        sa.Column("batch_id", sa.String(64)),
        sa.Column("scene_videos", sa.JSON, nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )


def _prompt_sessions() -> None:
    op.create_table(
        "prompt_sessions",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("prompt", sa.Text, nullable=True),
        sa.Column("parameters", sa.JSON, nullable=True),
        sa.Column("history", sa.JSON, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )


def _model_downloads() -> None:
    op.create_table(
        "model_downloads",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("model_id", sa.String(200), nullable=False),
        sa.Column("filename", sa.String(255), nullable=False),
        sa.Column("folder", sa.String(255), nullable=False),
        sa.Column("target_path", sa.Text, nullable=False),
        sa.Column("source_url", sa.Text, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("phase", sa.String(200)),
        sa.Column("bytes_done", sa.BigInteger, nullable=False),
        sa.Column("bytes_total", sa.BigInteger),
        sa.Column("speed_bytes_per_s", sa.Float),
        sa.Column("sha256", sa.String(64)),
        sa.Column("error", sa.Text),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True)),
    )
    op.create_index("ix_model_downloads_model_id", "model_downloads", ["model_id"])
    op.create_index("ix_model_downloads_status", "model_downloads", ["status"])


def downgrade() -> None:
    # Dropping a table drops its indexes with it.
    for table in ("model_downloads", "prompt_sessions", "scene_sessions", "batches", "jobs"):
        op.drop_table(table)
