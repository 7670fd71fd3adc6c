"""Gateway: projects, their uploaded images, tasks (questions issued) and annotations (results).

Revision ID: 0005_gateway
Revises: 0001 (a branch of its own; ``migrate()`` upgrades to "heads")
Create Date: 2026-11-21
"""

import sqlalchemy as sa
from alembic import op

revision = "0005_gateway"
down_revision = "0001"
branch_labels = ("gateway",)
depends_on = None

TZ = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "gateway_projects",
        sa.Column("project_id", sa.String(64), primary_key=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("labels", sa.JSON, nullable=False),
        sa.Column("created_by", sa.String(32), nullable=False),
        sa.Column("created_at", TZ, nullable=False),
    )
    op.create_table(
        "gateway_images",
        sa.Column("project_id", sa.String(64), sa.ForeignKey("gateway_projects.project_id", ondelete="CASCADE"),
                  primary_key=True),
        sa.Column("image_id", sa.String(64), primary_key=True),
        sa.Column("filename", sa.String(255), nullable=False),
        sa.Column("stored_name", sa.String(64), nullable=False, unique=True),
        sa.Column("content_type", sa.String(32), nullable=False),
        sa.Column("width", sa.Integer, nullable=False),
        sa.Column("height", sa.Integer, nullable=False),
        sa.Column("size_bytes", sa.Integer, nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("position", sa.Integer, nullable=False),
        sa.Column("created_at", TZ, nullable=False),
        sa.UniqueConstraint("project_id", "sha256", name="uq_gateway_images_project_sha256"),
    )
    op.create_table(
        "gateway_tasks",
        sa.Column("task_id", sa.String(64), primary_key=True),
        sa.Column("project_id", sa.String(64), nullable=False, index=True),
        sa.Column("image_id", sa.String(64), nullable=False),
        sa.Column("question_type", sa.String(16), nullable=False),
        sa.Column("question_id", sa.String(128), nullable=False),
        sa.Column("policy", sa.String(64), nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("prompt", sa.Text, nullable=False),
        sa.Column("assignee", sa.String(32), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("session_id", sa.String(128), nullable=True),
        sa.Column("created_at", TZ, nullable=False),
        sa.Column("updated_at", TZ, nullable=False),
    )
    op.create_index("ix_gateway_tasks_project_image", "gateway_tasks", ["project_id", "image_id"])
    op.create_table(
        "gateway_annotations",
        sa.Column("session_id", sa.String(128), primary_key=True),
        sa.Column("project_id", sa.String(64), nullable=False, index=True),
        sa.Column("image_id", sa.String(64), nullable=False),
        sa.Column("task_id", sa.String(64), nullable=False),
        sa.Column("annotator_id", sa.String(32), nullable=False),
        sa.Column("outcome", sa.String(16), nullable=False),
        sa.Column("label", sa.String(200), nullable=False),
        sa.Column("mask_height", sa.Integer, nullable=False),
        sa.Column("mask_width", sa.Integer, nullable=False),
        sa.Column("mask_counts", sa.Text, nullable=False),
        sa.Column("area_px", sa.Integer, nullable=False),
        sa.Column("click_count", sa.Integer, nullable=False),
        sa.Column("seconds", sa.Float, nullable=False),
        sa.Column("quality_operation_id", sa.String(64), nullable=False),
        sa.Column("byproducts_operation_id", sa.String(64), nullable=False),
        sa.Column("created_at", TZ, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("gateway_annotations")
    op.drop_index("ix_gateway_tasks_project_image", "gateway_tasks")
    op.drop_table("gateway_tasks")
    op.drop_table("gateway_images")
    op.drop_table("gateway_projects")
