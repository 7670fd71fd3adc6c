"""Dialog service: issued questions with their answers, fitted cost and acceptance models.

Revision ID: 0006_dialog
Revises: 0001 (a branch of its own; ``migrate()`` upgrades to "heads")
Create Date: 2026-11-21
"""

import sqlalchemy as sa
from alembic import op

revision = "0006_dialog"
down_revision = "0001"
branch_labels = ("dialog",)
depends_on = None

TZ = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "dialog_questions",
        sa.Column("question_id", sa.String(36), primary_key=True),
        sa.Column("project_id", sa.String(128), nullable=False),
        sa.Column("annotator_id", sa.String(255), nullable=False),
        sa.Column("policy", sa.String(63), nullable=False),
        sa.Column("candidate_key", sa.String(512), nullable=False),
        sa.Column("candidate", sa.LargeBinary, nullable=False),
        sa.Column("plan", sa.JSON, nullable=False),
        sa.Column("step", sa.Integer, nullable=False),
        sa.Column("type", sa.String(16), nullable=False),
        sa.Column("proposal", sa.Integer, nullable=True),
        sa.Column("features", sa.JSON, nullable=False),
        sa.Column("expected_seconds", sa.Float, nullable=False),
        sa.Column("expected_gain", sa.Float, nullable=False),
        sa.Column("acceptance_probability", sa.Float, nullable=False),
        sa.Column("reason", sa.String(500), nullable=False),
        sa.Column("created_at", TZ, nullable=False),
        sa.Column("answered_at", TZ, nullable=True),
        sa.Column("answered_by", sa.String(255), nullable=True),
        sa.Column("answer_kind", sa.String(16), nullable=True),
        sa.Column("answer", sa.JSON, nullable=True),
        sa.Column("accepted", sa.Boolean, nullable=True),
        sa.Column("clicks", sa.Integer, nullable=True),
        sa.Column("seconds_taken", sa.Float, nullable=True),
    )
    op.create_index("ix_dialog_questions_project_candidate", "dialog_questions", ["project_id", "candidate_key"])
    op.create_index("ix_dialog_questions_project_answered", "dialog_questions", ["project_id", "answered_at"])
    op.create_table(
        "dialog_models",
        sa.Column("project_id", sa.String(128), primary_key=True),
        sa.Column("annotator_id", sa.String(255), primary_key=True),
        sa.Column("kind", sa.String(16), primary_key=True),
        sa.Column("params", sa.JSON, nullable=False),
        sa.Column("observations", sa.Integer, nullable=False),
        sa.Column("fit_time", TZ, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("dialog_models")
    op.drop_index("ix_dialog_questions_project_answered", "dialog_questions")
    op.drop_index("ix_dialog_questions_project_candidate", "dialog_questions")
    op.drop_table("dialog_questions")
