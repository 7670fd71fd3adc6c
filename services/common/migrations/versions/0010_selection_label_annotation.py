"""Selection: a label row names the annotation it came from (the loop's AnnotationSubmitted), once per pool.

Revision ID: 0010_selection_label_annotation
Revises: 0003_selection
Create Date: 2026-12-07
"""

import sqlalchemy as sa
from alembic import op

revision = "0010_selection_label_annotation"
down_revision = "0003_selection"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("selection_labels") as batch:  # batch: SQLite cannot add a constraint in place
        batch.add_column(sa.Column("annotation_id", sa.String(128), nullable=True))
        batch.create_unique_constraint("uq_selection_labels_annotation", ["project_id", "pool_id", "annotation_id"])


def downgrade() -> None:
    with op.batch_alter_table("selection_labels") as batch:
        batch.drop_constraint("uq_selection_labels_annotation", type_="unique")
        batch.drop_column("annotation_id")
