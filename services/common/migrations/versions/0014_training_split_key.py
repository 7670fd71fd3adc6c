"""Training service: the split key of each snapshot (TRAINING_SPLIT_KEYS); earlier snapshots were split by
their project's id, which is what they get.

Revision ID: 0014_training_split_key
Revises: 0011_training_reviews (the training branch)
Create Date: 2026-12-08
"""

import sqlalchemy as sa
from alembic import op

revision = "0014_training_split_key"
down_revision = "0011_training_reviews"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("training_snapshots", sa.Column("split_key", sa.String(128), nullable=False, server_default=""))
    op.execute("UPDATE training_snapshots SET split_key = project_id")


def downgrade() -> None:
    with op.batch_alter_table("training_snapshots") as batch:
        batch.drop_column("split_key")
