"""Quality service: each project's promoted quality model, as the training service publishes it.

Revision ID: 0012_quality_project_models
Revises: 0004_quality (the quality branch)
Create Date: 2026-12-07
"""

import sqlalchemy as sa
from alembic import op

revision = "0012_quality_project_models"
down_revision = "0004_quality"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "quality_project_models",
        sa.Column("project_id", sa.String(128), primary_key=True),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("weights", sa.LargeBinary, nullable=False),
        sa.Column("figures", sa.JSON, nullable=False),
        sa.Column("published_ns", sa.BigInteger, nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("quality_project_models")
