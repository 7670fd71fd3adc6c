"""SQL tables of the dialog service (migration ``0006_dialog``): issued questions with their answers,
and the fitted cost and acceptance models per project and annotator."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import JSON, Boolean, DateTime, Float, Index, Integer, LargeBinary, String
from sqlalchemy.orm import Mapped, mapped_column

from services.common.storage import Base


class QuestionRow(Base):
    __tablename__ = "dialog_questions"
    __table_args__ = (Index("ix_dialog_questions_project_candidate", "project_id", "candidate_key"),
                      Index("ix_dialog_questions_project_answered", "project_id", "answered_at"))
    question_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    project_id: Mapped[str] = mapped_column(String(128))
    annotator_id: Mapped[str] = mapped_column(String(255), default="")
    policy: Mapped[str] = mapped_column(String(63))
    candidate_key: Mapped[str] = mapped_column(String(512))
    candidate: Mapped[bytes] = mapped_column(LargeBinary)  # the annotation.v1.Candidate as sent
    plan: Mapped[list] = mapped_column(JSON)  # [[type, proposal index or null], ...]
    step: Mapped[int] = mapped_column(Integer)  # index of this question in the plan
    type: Mapped[str] = mapped_column(String(16))
    proposal: Mapped[int | None] = mapped_column(Integer, nullable=True)
    features: Mapped[dict] = mapped_column(JSON)  # what the models saw
    expected_seconds: Mapped[float] = mapped_column(Float)
    expected_gain: Mapped[float] = mapped_column(Float)
    acceptance_probability: Mapped[float] = mapped_column(Float)
    reason: Mapped[str] = mapped_column(String(500), default="")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    answered_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    answered_by: Mapped[str | None] = mapped_column(String(255), nullable=True)
    answer_kind: Mapped[str | None] = mapped_column(String(16), nullable=True)  # verify|labels|segment|skip
    answer: Mapped[dict | None] = mapped_column(JSON, nullable=True)
    accepted: Mapped[bool | None] = mapped_column(Boolean, nullable=True)
    clicks: Mapped[int | None] = mapped_column(Integer, nullable=True)
    seconds_taken: Mapped[float | None] = mapped_column(Float, nullable=True)


class ModelRow(Base):
    __tablename__ = "dialog_models"
    project_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    annotator_id: Mapped[str] = mapped_column(String(255), primary_key=True)  # "" for the project
    kind: Mapped[str] = mapped_column(String(16), primary_key=True)  # cost | acceptance
    params: Mapped[dict] = mapped_column(JSON)
    observations: Mapped[int] = mapped_column(Integer)
    fit_time: Mapped[datetime] = mapped_column(DateTime(timezone=True))
