"""SQL tables of the selection service (migrations ``0003_selection``, ``0010_selection_label_annotation``,
``0013_selection_wanted_regions``)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from services.common.storage import Base

ID = BigInteger().with_variant(Integer, "sqlite")  # SQLite autoincrements INTEGER PRIMARY KEY only
HEURISTIC_COLUMNS = ("entropy", "vote_entropy", "js_divergence", "ensemble_l2", "self_consistency", "combined")


class PoolRow(Base):
    __tablename__ = "selection_pools"
    project_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    pool_id: Mapped[str] = mapped_column(String(63), primary_key=True)
    display_name: Mapped[str] = mapped_column(String(200), default="")
    class_names: Mapped[list] = mapped_column(JSON)
    embedding_dim: Mapped[int | None] = mapped_column(Integer, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    score_time: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class ItemRow(Base):
    __tablename__ = "selection_items"
    project_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    pool_id: Mapped[str] = mapped_column(String(63), primary_key=True)
    item_id: Mapped[str] = mapped_column(String(255), primary_key=True)
    position: Mapped[int] = mapped_column(Integer)
    kind: Mapped[str] = mapped_column(String(8))  # image | frame
    image_id: Mapped[str] = mapped_column(String(255))
    uri: Mapped[str] = mapped_column(Text, default="")
    width: Mapped[int] = mapped_column(Integer, default=0)
    height: Mapped[int] = mapped_column(Integer, default=0)
    video_id: Mapped[str | None] = mapped_column(String(255), nullable=True)
    frame_index: Mapped[int | None] = mapped_column(Integer, nullable=True)
    image_labels: Mapped[list] = mapped_column(JSON, default=list)
    labelled: Mapped[bool] = mapped_column(Boolean, default=False)
    present_classes: Mapped[list | None] = mapped_column(JSON, nullable=True)  # from the last scoring
    histogram: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)  # float32 colour histogram
    embedding: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)  # float32


class PredictionRow(Base):
    __tablename__ = "selection_predictions"
    project_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    pool_id: Mapped[str] = mapped_column(String(63), primary_key=True)
    item_id: Mapped[str] = mapped_column(String(255), primary_key=True)
    blob: Mapped[bytes] = mapped_column(LargeBinary)
    digest: Mapped[str] = mapped_column(String(32))
    model_version: Mapped[str] = mapped_column(String(200), default="")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class ScoreRow(Base):
    __tablename__ = "selection_scores"
    __table_args__ = (Index("ix_selection_scores_pool_key", "project_id", "pool_id", "region_key"),
                      Index("ix_selection_scores_item", "project_id", "pool_id", "item_id", "region_key"))
    id: Mapped[int] = mapped_column(ID, primary_key=True, autoincrement=True)
    project_id: Mapped[str] = mapped_column(String(128))
    pool_id: Mapped[str] = mapped_column(String(63))
    item_id: Mapped[str] = mapped_column(String(255))
    region_key: Mapped[str] = mapped_column(String(32))  # image | patch:<px> | superpixel:<n>
    segment: Mapped[int] = mapped_column(Integer)
    x: Mapped[int] = mapped_column(Integer)
    y: Mapped[int] = mapped_column(Integer)
    width: Mapped[int] = mapped_column(Integer)
    height: Mapped[int] = mapped_column(Integer)
    area_px: Mapped[int] = mapped_column(BigInteger)
    majority_class: Mapped[int] = mapped_column(Integer)
    confidence: Mapped[float] = mapped_column(Float)
    entropy: Mapped[float | None] = mapped_column(Float, nullable=True)
    vote_entropy: Mapped[float | None] = mapped_column(Float, nullable=True)
    js_divergence: Mapped[float | None] = mapped_column(Float, nullable=True)
    ensemble_l2: Mapped[float | None] = mapped_column(Float, nullable=True)
    self_consistency: Mapped[float | None] = mapped_column(Float, nullable=True)
    combined: Mapped[float | None] = mapped_column(Float, nullable=True)
    labelled: Mapped[bool] = mapped_column(Boolean, default=False)
    digest: Mapped[str] = mapped_column(String(32))
    model_version: Mapped[str] = mapped_column(String(200), default="")
    scored_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class LabelRow(Base):
    __tablename__ = "selection_labels"
    # One row per pool and annotation: a redelivered AnnotationSubmitted records nothing twice.
    __table_args__ = (UniqueConstraint("project_id", "pool_id", "annotation_id",
                                       name="uq_selection_labels_annotation"),)
    id: Mapped[int] = mapped_column(ID, primary_key=True, autoincrement=True)
    project_id: Mapped[str] = mapped_column(String(128), index=True)
    pool_id: Mapped[str] = mapped_column(String(63))
    item_id: Mapped[str] = mapped_column(String(255))
    region: Mapped[dict | None] = mapped_column(JSON, nullable=True)
    class_labels: Mapped[list] = mapped_column(JSON, default=list)
    mask: Mapped[dict | None] = mapped_column(JSON, nullable=True)
    annotator_id: Mapped[str] = mapped_column(String(200), default="")
    label_time: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    annotation_id: Mapped[str | None] = mapped_column(String(128), nullable=True)  # None: via ReportLabels


class BatchRow(Base):
    __tablename__ = "selection_batches"
    selection_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    project_id: Mapped[str] = mapped_column(String(128), index=True)
    pool_id: Mapped[str] = mapped_column(String(63))
    strategy: Mapped[str] = mapped_column(String(64))
    request: Mapped[dict] = mapped_column(JSON)
    regions: Mapped[list] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class WantedRegionRow(Base):
    """A region spec SelectBatch was asked for before the pool had scores for it (``region_demand.py``)."""
    __tablename__ = "selection_wanted_regions"
    project_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    pool_id: Mapped[str] = mapped_column(String(63), primary_key=True)
    region_key: Mapped[str] = mapped_column(String(32), primary_key=True)  # patch:<px> | superpixel:<n>
    operation_id: Mapped[str | None] = mapped_column(String(64), nullable=True)  # the last scoring enqueued
    wanted_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
