"""Training service: reviewed sessions (``SessionReviewed``), what the quality model retrains on.

Revision ID: 0011_training_reviews
Revises: 0008_training (the training branch)
Create Date: 2026-12-07
"""

import sqlalchemy as sa
from alembic import op

revision = "0011_training_reviews"
down_revision = "0008_training"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "training_reviews",
        sa.Column("project_id", sa.String(128), primary_key=True),
        sa.Column("session_id", sa.String(128), primary_key=True),
        sa.Column("image_id", sa.String(255), nullable=False),
        sa.Column("true_iou", sa.Float, nullable=False),
        sa.Column("steps", sa.JSON, nullable=False),
        sa.Column("session_features", sa.JSON, nullable=False),
        sa.Column("feature_names", sa.JSON, nullable=False),
        sa.Column("base_probability_below", sa.Float, nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("training_reviews")
