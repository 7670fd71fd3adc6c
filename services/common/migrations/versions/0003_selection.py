"""Selection service: pools, items, predictions, region scores, labels, selected batches.

Revision ID: 0003_selection
Revises: 0001 (a branch of its own; ``migrate()`` upgrades to "heads")
Create Date: 2026-11-21
"""

import sqlalchemy as sa
from alembic import op

revision = "0003_selection"
down_revision = "0001"
branch_labels = ("selection",)
depends_on = None

ID = sa.BigInteger().with_variant(sa.Integer, "sqlite")
TZ = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "selection_pools",
        sa.Column("project_id", sa.String(128), primary_key=True),
        sa.Column("pool_id", sa.String(63), primary_key=True),
        sa.Column("display_name", sa.String(200), nullable=False),
        sa.Column("class_names", sa.JSON, nullable=False),
        sa.Column("embedding_dim", sa.Integer, nullable=True),
        sa.Column("created_at", TZ, nullable=False),
        sa.Column("score_time", TZ, nullable=True),
    )
    op.create_table(
        "selection_items",
        sa.Column("project_id", sa.String(128), primary_key=True),
        sa.Column("pool_id", sa.String(63), primary_key=True),
        sa.Column("item_id", sa.String(255), primary_key=True),
        sa.Column("position", sa.Integer, nullable=False),
        sa.Column("kind", sa.String(8), nullable=False),
        sa.Column("image_id", sa.String(255), nullable=False),
        sa.Column("uri", sa.Text, nullable=False),
        sa.Column("width", sa.Integer, nullable=False),
        sa.Column("height", sa.Integer, nullable=False),
        sa.Column("video_id", sa.String(255), nullable=True),
        sa.Column("frame_index", sa.Integer, nullable=True),
        sa.Column("image_labels", sa.JSON, nullable=False),
        sa.Column("labelled", sa.Boolean, nullable=False),
        sa.Column("present_classes", sa.JSON, nullable=True),
        sa.Column("histogram", sa.LargeBinary, nullable=True),
        sa.Column("embedding", sa.LargeBinary, nullable=True),
    )
    op.create_table(
        "selection_predictions",
        sa.Column("project_id", sa.String(128), primary_key=True),
        sa.Column("pool_id", sa.String(63), primary_key=True),
        sa.Column("item_id", sa.String(255), primary_key=True),
        sa.Column("blob", sa.LargeBinary, nullable=False),
        sa.Column("digest", sa.String(32), nullable=False),
        sa.Column("model_version", sa.String(200), nullable=False),
        sa.Column("created_at", TZ, nullable=False),
    )
    op.create_table(
        "selection_scores",
        sa.Column("id", ID, primary_key=True, autoincrement=True),
        sa.Column("project_id", sa.String(128), nullable=False),
        sa.Column("pool_id", sa.String(63), nullable=False),
        sa.Column("item_id", sa.String(255), nullable=False),
        sa.Column("region_key", sa.String(32), nullable=False),
        sa.Column("segment", sa.Integer, nullable=False),
        sa.Column("x", sa.Integer, nullable=False),
        sa.Column("y", sa.Integer, nullable=False),
        sa.Column("width", sa.Integer, nullable=False),
        sa.Column("height", sa.Integer, nullable=False),
        sa.Column("area_px", sa.BigInteger, nullable=False),
        sa.Column("majority_class", sa.Integer, nullable=False),
        sa.Column("confidence", sa.Float, nullable=False),
        *(sa.Column(name, sa.Float, nullable=True) for name in
          ("entropy", "vote_entropy", "js_divergence", "ensemble_l2", "self_consistency", "combined")),
        sa.Column("labelled", sa.Boolean, nullable=False),
        sa.Column("digest", sa.String(32), nullable=False),
        sa.Column("model_version", sa.String(200), nullable=False),
        sa.Column("scored_at", TZ, nullable=False),
    )
    op.create_index("ix_selection_scores_pool_key", "selection_scores", ["project_id", "pool_id", "region_key"])
    op.create_index("ix_selection_scores_item", "selection_scores",
                    ["project_id", "pool_id", "item_id", "region_key"])
    op.create_table(
        "selection_labels",
        sa.Column("id", ID, primary_key=True, autoincrement=True),
        sa.Column("project_id", sa.String(128), nullable=False, index=True),
        sa.Column("pool_id", sa.String(63), nullable=False),
        sa.Column("item_id", sa.String(255), nullable=False),
        sa.Column("region", sa.JSON, nullable=True),
        sa.Column("class_labels", sa.JSON, nullable=False),
        sa.Column("mask", sa.JSON, nullable=True),
        sa.Column("annotator_id", sa.String(200), nullable=False),
        sa.Column("label_time", TZ, nullable=False),
    )
    op.create_table(
        "selection_batches",
        sa.Column("selection_id", sa.String(32), primary_key=True),
        sa.Column("project_id", sa.String(128), nullable=False, index=True),
        sa.Column("pool_id", sa.String(63), nullable=False),
        sa.Column("strategy", sa.String(64), nullable=False),
        sa.Column("request", sa.JSON, nullable=False),
        sa.Column("regions", sa.JSON, nullable=False),
        sa.Column("created_at", TZ, nullable=False),
    )


def downgrade() -> None:
    for table in ("selection_batches", "selection_labels", "selection_scores", "selection_predictions",
                  "selection_items", "selection_pools"):
        op.drop_table(table)
