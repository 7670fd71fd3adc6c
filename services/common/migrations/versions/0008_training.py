"""Training service: received annotations, snapshots, the model registry, training jobs.

Revision ID: 0008_training
Revises: 0001 (a branch of its own; ``migrate()`` upgrades to "heads")
Create Date: 2026-11-28
"""

import sqlalchemy as sa
from alembic import op

revision = "0008_training"
down_revision = "0001"
branch_labels = ("training",)
depends_on = None

TZ = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "training_annotations",
        sa.Column("project_id", sa.String(128), primary_key=True),
        sa.Column("annotation_id", sa.String(128), primary_key=True),
        sa.Column("session_id", sa.String(128), nullable=False),
        sa.Column("task_id", sa.String(128), nullable=False),
        sa.Column("annotator_id", sa.String(200), nullable=False),
        sa.Column("image_id", sa.String(255), nullable=False),
        sa.Column("uri", sa.Text, nullable=False),
        sa.Column("width", sa.Integer, nullable=False),
        sa.Column("height", sa.Integer, nullable=False),
        sa.Column("label", sa.String(200), nullable=False),
        sa.Column("mask_counts", sa.Text, nullable=False),
        sa.Column("clicks", sa.JSON, nullable=False),
        sa.Column("model_version", sa.String(128), nullable=False),
        sa.Column("total_time_ms", sa.Integer, nullable=False),
        sa.Column("pseudo_label", sa.Boolean, nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("submit_time", TZ, nullable=False),
        sa.Column("received_at", TZ, nullable=False),
    )
    op.create_index("ix_training_annotations_project_state", "training_annotations", ["project_id", "state"])
    op.create_table(
        "training_snapshots",
        sa.Column("project_id", sa.String(128), primary_key=True),
        sa.Column("snapshot_id", sa.String(64), primary_key=True),
        sa.Column("annotation_count", sa.Integer, nullable=False),
        sa.Column("image_count", sa.Integer, nullable=False),
        sa.Column("train_image_count", sa.Integer, nullable=False),
        sa.Column("heldout_image_count", sa.Integer, nullable=False),
        sa.Column("heldout_percent", sa.Integer, nullable=False),
        sa.Column("class_names", sa.JSON, nullable=False),
        sa.Column("created_at", TZ, nullable=False, index=True),
    )
    op.create_table(
        "training_snapshot_entries",
        sa.Column("project_id", sa.String(128), primary_key=True),
        sa.Column("snapshot_id", sa.String(64), primary_key=True),
        sa.Column("annotation_id", sa.String(128), primary_key=True),
        sa.Column("image_id", sa.String(255), nullable=False),
        sa.Column("uri", sa.Text, nullable=False),
        sa.Column("width", sa.Integer, nullable=False),
        sa.Column("height", sa.Integer, nullable=False),
        sa.Column("label", sa.String(200), nullable=False),
        sa.Column("mask_counts", sa.Text, nullable=False),
        sa.Column("heldout", sa.Boolean, nullable=False),
        sa.Column("pseudo_label", sa.Boolean, nullable=False),
        sa.Column("position", sa.Integer, nullable=False),
    )
    op.create_table(
        "training_models",
        sa.Column("project_id", sa.String(128), primary_key=True),
        sa.Column("kind", sa.String(16), primary_key=True),
        sa.Column("version", sa.Integer, primary_key=True),
        sa.Column("parent_version", sa.Integer, nullable=False),
        sa.Column("snapshot_id", sa.String(64), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("command", sa.Text, nullable=False),
        sa.Column("config", sa.JSON, nullable=False),
        sa.Column("figures", sa.JSON, nullable=False),
        sa.Column("gate", sa.JSON, nullable=False),
        sa.Column("class_names", sa.JSON, nullable=False),
        sa.Column("artifact", sa.Text, nullable=False),
        sa.Column("triton_model_name", sa.String(200), nullable=False),
        sa.Column("operation_id", sa.String(64), nullable=False),
        sa.Column("created_at", TZ, nullable=False),
        sa.Column("promote_time", TZ, nullable=True),
        sa.Column("updated_at", TZ, nullable=False),
        sa.UniqueConstraint("operation_id", name="uq_training_models_operation"),
    )
    op.create_table(
        "training_jobs",
        sa.Column("operation_id", sa.String(64), primary_key=True),
        sa.Column("project_id", sa.String(128), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("snapshot_id", sa.String(64), nullable=False),
        sa.Column("config", sa.JSON, nullable=False),
        sa.Column("active", sa.Integer, nullable=True),
        sa.Column("outcome", sa.String(32), nullable=False),
        sa.Column("created_at", TZ, nullable=False),
        sa.Column("finished_at", TZ, nullable=True),
        sa.UniqueConstraint("project_id", "kind", "active", name="uq_training_jobs_active"),
    )


def downgrade() -> None:
    op.drop_table("training_jobs")
    op.drop_table("training_models")
    op.drop_table("training_snapshot_entries")
    op.drop_table("training_snapshots")
    op.drop_index("ix_training_annotations_project_state", "training_annotations")
    op.drop_table("training_annotations")
