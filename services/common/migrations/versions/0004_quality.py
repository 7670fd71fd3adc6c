"""Quality service: finished sessions with their latest score and the reviewer's verdict.

Revision ID: 0004_quality
Revises: 0001 (a branch of its own; ``migrate()`` upgrades to "heads")
Create Date: 2026-11-21
"""

import sqlalchemy as sa
from alembic import op

revision = "0004_quality"
down_revision = "0001"
branch_labels = ("quality",)
depends_on = None

TZ = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "quality_sessions",
        sa.Column("project_id", sa.String(128), primary_key=True),
        sa.Column("session_id", sa.String(128), primary_key=True),
        sa.Column("annotator_id", sa.String(200), nullable=False),
        sa.Column("task_id", sa.String(200), nullable=False),
        sa.Column("image_id", sa.String(255), nullable=False),
        sa.Column("uri", sa.Text, nullable=False),
        sa.Column("width", sa.Integer, nullable=False),
        sa.Column("height", sa.Integer, nullable=False),
        sa.Column("label", sa.String(200), nullable=False),
        sa.Column("click_count", sa.Integer, nullable=False),
        sa.Column("finish_time", TZ, nullable=False),
        sa.Column("summary", sa.JSON, nullable=False),
        sa.Column("predicted_iou", sa.Float, nullable=False),
        sa.Column("probability_below", sa.Float, nullable=False),
        sa.Column("threshold", sa.Float, nullable=False),
        sa.Column("reasons", sa.JSON, nullable=False),
        sa.Column("model_version", sa.String(64), nullable=False),
        sa.Column("score_time", TZ, nullable=False),
        sa.Column("verdict", sa.Integer, nullable=False),
        sa.Column("reviewer_id", sa.String(200), nullable=False),
        sa.Column("comment", sa.Text, nullable=False),
        sa.Column("review_time", TZ, nullable=True),
        sa.Column("corrected_mask", sa.JSON, nullable=True),
        sa.Column("true_iou", sa.Float, nullable=True),
    )
    op.create_index("ix_quality_sessions_queue", "quality_sessions", ["project_id", "verdict", "predicted_iou"])


def downgrade() -> None:
    op.drop_index("ix_quality_sessions_queue", "quality_sessions")
    op.drop_table("quality_sessions")
