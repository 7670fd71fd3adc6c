"""SQL tables of the quality service: one row per finished session (migration ``0004_quality``); each
project's quality model as the training service published it (``0012_quality_project_models``)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import JSON, BigInteger, DateTime, Float, Index, Integer, LargeBinary, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from services.common.storage import Base


class ScoredSessionRow(Base):
    """A finished session, its latest score and the reviewer's verdict (0 = not reviewed)."""

    __tablename__ = "quality_sessions"
    __table_args__ = (Index("ix_quality_sessions_queue", "project_id", "verdict", "predicted_iou"),)
    project_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    session_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    annotator_id: Mapped[str] = mapped_column(String(200), default="")
    task_id: Mapped[str] = mapped_column(String(200), default="")
    image_id: Mapped[str] = mapped_column(String(255), default="")
    uri: Mapped[str] = mapped_column(Text, default="")
    width: Mapped[int] = mapped_column(Integer)
    height: Mapped[int] = mapped_column(Integer)
    label: Mapped[str] = mapped_column(String(200), default="")
    click_count: Mapped[int] = mapped_column(Integer)
    finish_time: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    summary: Mapped[dict] = mapped_column(JSON)  # the FinishSession payload: re-scoring and retraining
    predicted_iou: Mapped[float] = mapped_column(Float)
    probability_below: Mapped[float] = mapped_column(Float)
    threshold: Mapped[float] = mapped_column(Float)
    reasons: Mapped[list] = mapped_column(JSON)
    model_version: Mapped[str] = mapped_column(String(64))
    score_time: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    verdict: Mapped[int] = mapped_column(Integer, default=0)
    reviewer_id: Mapped[str] = mapped_column(String(200), default="")
    comment: Mapped[str] = mapped_column(Text, default="")
    review_time: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    corrected_mask: Mapped[dict | None] = mapped_column(JSON, nullable=True)
    true_iou: Mapped[float | None] = mapped_column(Float, nullable=True)


class ProjectModelRow(Base):
    """The project's promoted quality model (``version`` 0 and no weights: back on the shipped model).
    ``published_ns`` orders the messages: an older one arriving late changes nothing."""

    __tablename__ = "quality_project_models"
    project_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    version: Mapped[int] = mapped_column(Integer)
    weights: Mapped[bytes] = mapped_column(LargeBinary)
    figures: Mapped[dict] = mapped_column(JSON)
    published_ns: Mapped[int] = mapped_column(BigInteger)
    received_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
