"""Gateway: what a task shows besides its prompt (the question's region, proposal, proposed label, plan).

Revision ID: 0009_gateway_task_detail
Revises: 0007_gateway_web_sessions
Create Date: 2026-12-07
"""

import sqlalchemy as sa
from alembic import op

revision = "0009_gateway_task_detail"
down_revision = "0007_gateway_web_sessions"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("gateway_tasks") as batch:
        batch.add_column(sa.Column("detail", sa.JSON, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("gateway_tasks") as batch:
        batch.drop_column("detail")
