"""Byproducts: sessions, events (unique per session by seq and by event id), derived signals.

Revision ID: 0002_byproducts
Revises: 0001
Create Date: 2026-11-22
"""

import sqlalchemy as sa
from alembic import op

revision = "0002_byproducts"
down_revision = "0001"
branch_labels = ("byproducts",)
depends_on = None

ID = 128


def upgrade() -> None:
    op.create_table(
        "byproduct_events",
        sa.Column("session_id", sa.String(ID), primary_key=True),
        sa.Column("seq", sa.BigInteger, primary_key=True),
        sa.Column("event_id", sa.String(ID), nullable=False),
        sa.Column("project_id", sa.String(ID), nullable=False),
        sa.Column("kind", sa.SmallInteger, nullable=False),
        sa.Column("t_ms", sa.BigInteger, nullable=False),
        sa.Column("client_time_ms", sa.BigInteger, nullable=True),
        sa.Column("received_ms", sa.BigInteger, nullable=False),
        sa.Column("data", sa.LargeBinary, nullable=False),
        sa.UniqueConstraint("session_id", "event_id", name="uq_byproduct_events_event_id"),
    )
    op.create_index("ix_byproduct_events_session_kind", "byproduct_events", ["session_id", "kind"])
    op.create_table(
        "byproduct_sessions",
        sa.Column("session_id", sa.String(ID), primary_key=True),
        sa.Column("project_id", sa.String(ID), nullable=False),
        sa.Column("annotator_id", sa.String(ID), nullable=False),
        sa.Column("task_id", sa.String(ID), nullable=False),
        sa.Column("image_id", sa.String(ID), nullable=False),
        sa.Column("question_type", sa.SmallInteger, nullable=False),
        sa.Column("start_time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("end_time", sa.DateTime(timezone=True), nullable=True),
        sa.Column("outcome", sa.SmallInteger, nullable=False),
        sa.Column("data", sa.LargeBinary, nullable=False),
    )
    op.create_index("ix_byproduct_sessions_project_start", "byproduct_sessions", ["project_id", "start_time"])
    op.create_index("ix_byproduct_sessions_task", "byproduct_sessions", ["task_id"])
    op.create_index("ix_byproduct_sessions_annotator", "byproduct_sessions", ["annotator_id"])
    op.create_index("ix_byproduct_sessions_image", "byproduct_sessions", ["project_id", "image_id"])
    op.create_table(
        "byproduct_signals",
        sa.Column("session_id", sa.String(ID), primary_key=True),
        sa.Column("project_id", sa.String(ID), nullable=False),
        sa.Column("time_to_first_click_ms", sa.BigInteger, nullable=False),
        sa.Column("total_time_ms", sa.BigInteger, nullable=False),
        sa.Column("active_time_ms", sa.BigInteger, nullable=False),
        sa.Column("idle_gaps", sa.JSON, nullable=False),
        sa.Column("idle_threshold_ms", sa.Integer, nullable=False),
        sa.Column("click_count", sa.Integer, nullable=False),
        sa.Column("correction_count", sa.Integer, nullable=False),
        sa.Column("mouse_path_length", sa.Float, nullable=False),
        sa.Column("clicks_per_minute", sa.Float, nullable=False),
        sa.Column("category_change_count", sa.Integer, nullable=False),
        sa.Column("keyboard_fraction", sa.Float, nullable=False),
        sa.Column("complete", sa.SmallInteger, nullable=False),
        sa.Column("compute_time", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_byproduct_signals_project_id", "byproduct_signals", ["project_id"])


def downgrade() -> None:
    op.drop_table("byproduct_signals")
    op.drop_table("byproduct_sessions")
    op.drop_table("byproduct_events")
