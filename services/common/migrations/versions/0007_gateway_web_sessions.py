"""Gateway: web sessions (a browser's login in exchange for an API key; HttpOnly cookie, CSRF token).

Revision ID: 0007_gateway_web_sessions
Revises: 0005_gateway
Create Date: 2026-11-28
"""

import sqlalchemy as sa
from alembic import op

revision = "0007_gateway_web_sessions"
down_revision = "0005_gateway"
branch_labels = None
depends_on = None

TZ = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "gateway_web_sessions",
        sa.Column("session_id", sa.String(32), primary_key=True),
        sa.Column("secret_sha256", sa.String(64), nullable=False),
        sa.Column("key_id", sa.String(32), nullable=False, index=True),
        sa.Column("sealed_key", sa.Text, nullable=False),
        sa.Column("csrf_token", sa.String(64), nullable=False),
        sa.Column("created_at", TZ, nullable=False),
        sa.Column("expires_at", TZ, nullable=False, index=True),
    )


def downgrade() -> None:
    op.drop_table("gateway_web_sessions")
