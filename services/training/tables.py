"""SQL tables of the training service (migration ``0008_training``).

- ``training_annotations``: every AnnotationSubmitted the service received (idempotent by id), with its
  state (accepted unless a review rejects it);
- ``training_snapshots`` and ``training_snapshot_entries``: frozen, content-addressed sets of them (with
  the split key since ``0014_training_split_key``);
- ``training_models``: the registry, one row per model version of a project and kind;
- ``training_jobs``: training jobs; ``active`` is 1 while one runs (unique per project and kind: a second
  job is refused) and NULL once it finished;
- ``training_reviews`` (migration ``0011_training_reviews``): reviewed sessions with their true IoU and the
  quality model's inputs, what the quality job trains on.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import JSON, Boolean, DateTime, Float, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from services.common.storage import Base

TZ = DateTime(timezone=True)


class AnnotationRow(Base):
    __tablename__ = "training_annotations"
    __table_args__ = (Index("ix_training_annotations_project_state", "project_id", "state"),)

    project_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    annotation_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    session_id: Mapped[str] = mapped_column(String(128), default="")
    task_id: Mapped[str] = mapped_column(String(128), default="")
    annotator_id: Mapped[str] = mapped_column(String(200), default="")
    image_id: Mapped[str] = mapped_column(String(255))
    uri: Mapped[str] = mapped_column(Text, default="")
    width: Mapped[int] = mapped_column(Integer)
    height: Mapped[int] = mapped_column(Integer)
    label: Mapped[str] = mapped_column(String(200))
    mask_counts: Mapped[str] = mapped_column(Text)
    clicks: Mapped[list] = mapped_column(JSON)
    model_version: Mapped[str] = mapped_column(String(128), default="")
    total_time_ms: Mapped[int] = mapped_column(Integer, default=0)
    pseudo_label: Mapped[bool] = mapped_column(Boolean, default=False)
    state: Mapped[str] = mapped_column(String(16))  # accepted, rejected
    submit_time: Mapped[datetime] = mapped_column(TZ)
    received_at: Mapped[datetime] = mapped_column(TZ)


class SnapshotRow(Base):
    __tablename__ = "training_snapshots"

    project_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    snapshot_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    annotation_count: Mapped[int] = mapped_column(Integer)
    image_count: Mapped[int] = mapped_column(Integer)
    train_image_count: Mapped[int] = mapped_column(Integer)
    heldout_image_count: Mapped[int] = mapped_column(Integer)
    heldout_percent: Mapped[int] = mapped_column(Integer)
    class_names: Mapped[list] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(TZ, index=True)
    split_key: Mapped[str] = mapped_column(String(128))  # migration 0014: the images held out follow it


class SnapshotEntryRow(Base):
    __tablename__ = "training_snapshot_entries"

    project_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    snapshot_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    annotation_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    image_id: Mapped[str] = mapped_column(String(255))
    uri: Mapped[str] = mapped_column(Text)
    width: Mapped[int] = mapped_column(Integer)
    height: Mapped[int] = mapped_column(Integer)
    label: Mapped[str] = mapped_column(String(200))
    mask_counts: Mapped[str] = mapped_column(Text)
    heldout: Mapped[bool] = mapped_column(Boolean)
    pseudo_label: Mapped[bool] = mapped_column(Boolean)
    position: Mapped[int] = mapped_column(Integer)  # paint order within the image (submit time, then id)


class ModelRow(Base):
    __tablename__ = "training_models"
    __table_args__ = (UniqueConstraint("operation_id", name="uq_training_models_operation"),)

    project_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    kind: Mapped[str] = mapped_column(String(16), primary_key=True)  # interactive, task, quality
    version: Mapped[int] = mapped_column(Integer, primary_key=True)
    parent_version: Mapped[int] = mapped_column(Integer, default=0)
    snapshot_id: Mapped[str] = mapped_column(String(64))
    state: Mapped[str] = mapped_column(String(16))  # candidate, promoted, rejected, rolled_back
    command: Mapped[str] = mapped_column(Text)
    config: Mapped[dict] = mapped_column(JSON)
    figures: Mapped[dict] = mapped_column(JSON)
    gate: Mapped[dict] = mapped_column(JSON)
    class_names: Mapped[list] = mapped_column(JSON)
    artifact: Mapped[str] = mapped_column(Text)  # the weights file
    triton_model_name: Mapped[str] = mapped_column(String(200), default="")
    operation_id: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(TZ)
    promote_time: Mapped[datetime | None] = mapped_column(TZ, nullable=True)
    updated_at: Mapped[datetime] = mapped_column(TZ)


class JobRow(Base):
    __tablename__ = "training_jobs"
    __table_args__ = (UniqueConstraint("project_id", "kind", "active", name="uq_training_jobs_active"),)

    operation_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    project_id: Mapped[str] = mapped_column(String(128))
    kind: Mapped[str] = mapped_column(String(16))
    snapshot_id: Mapped[str] = mapped_column(String(64))
    config: Mapped[dict] = mapped_column(JSON)
    active: Mapped[int | None] = mapped_column(Integer, nullable=True)
    outcome: Mapped[str] = mapped_column(String(32), default="")
    created_at: Mapped[datetime] = mapped_column(TZ)
    finished_at: Mapped[datetime | None] = mapped_column(TZ, nullable=True)


class ReviewRow(Base):
    """A reviewed session as the quality model learns from it (``SessionReviewed``); the latest verdict wins."""

    __tablename__ = "training_reviews"

    project_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    session_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    image_id: Mapped[str] = mapped_column(String(255))
    true_iou: Mapped[float] = mapped_column(Float)
    steps: Mapped[list] = mapped_column(JSON)  # per-click feature rows
    session_features: Mapped[list] = mapped_column(JSON)
    feature_names: Mapped[dict] = mapped_column(JSON)  # {"steps": [...], "session": [...]}
    base_probability_below: Mapped[float] = mapped_column(Float)
    received_at: Mapped[datetime] = mapped_column(TZ)
