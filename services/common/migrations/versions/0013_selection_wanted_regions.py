"""Selection: the region specs a pool was asked for (SelectBatch at a patch size or superpixel count it had no
scores for), scored after every promoted task model; the last scoring enqueued for one, so it is sent once.

Revision ID: 0013_selection_wanted_regions
Revises: 0010_selection_label_annotation
Create Date: 2026-12-07
"""

import sqlalchemy as sa
from alembic import op

revision = "0013_selection_wanted_regions"
down_revision = "0010_selection_label_annotation"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "selection_wanted_regions",
        sa.Column("project_id", sa.String(128), primary_key=True),
        sa.Column("pool_id", sa.String(63), primary_key=True),
        sa.Column("region_key", sa.String(32), primary_key=True),
        sa.Column("operation_id", sa.String(64), nullable=True),
        sa.Column("wanted_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("selection_wanted_regions")
