"""The gateway's tables (migration 0005_gateway): projects, images, tasks and annotations; web sessions (0007)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import JSON, DateTime, Float, ForeignKey, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from services.common.storage import Base

TZ = DateTime(timezone=True)


class Project(Base):
    __tablename__ = "gateway_projects"

    project_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    labels: Mapped[list[str]] = mapped_column(JSON)
    created_by: Mapped[str] = mapped_column(String(32))
    created_at: Mapped[datetime] = mapped_column(TZ)


class Image(Base):
    __tablename__ = "gateway_images"

    project_id: Mapped[str] = mapped_column(
        String(64), ForeignKey("gateway_projects.project_id", ondelete="CASCADE"), primary_key=True)
    image_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    filename: Mapped[str] = mapped_column(String(255))
    stored_name: Mapped[str] = mapped_column(String(64), unique=True)
    content_type: Mapped[str] = mapped_column(String(32))
    width: Mapped[int] = mapped_column(Integer)
    height: Mapped[int] = mapped_column(Integer)
    size_bytes: Mapped[int] = mapped_column(Integer)
    sha256: Mapped[str] = mapped_column(String(64))
    position: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(TZ)


class Task(Base):
    """A question issued to one annotator about one image (by the dialog policy or the fallback)."""

    __tablename__ = "gateway_tasks"

    task_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    project_id: Mapped[str] = mapped_column(String(64), index=True)
    image_id: Mapped[str] = mapped_column(String(64))
    question_type: Mapped[str] = mapped_column(String(16))
    question_id: Mapped[str] = mapped_column(String(128))
    policy: Mapped[str] = mapped_column(String(64))
    reason: Mapped[str] = mapped_column(Text)
    prompt: Mapped[str] = mapped_column(Text)
    assignee: Mapped[str] = mapped_column(String(32))
    state: Mapped[str] = mapped_column(String(16))  # OPEN, SUBMITTED, SKIPPED
    session_id: Mapped[str | None] = mapped_column(String(128), nullable=True)
    created_at: Mapped[datetime] = mapped_column(TZ)
    updated_at: Mapped[datetime] = mapped_column(TZ)
    # What the page shows besides the prompt (migration 0009): region, proposal, proposed label, plan.
    detail: Mapped[dict | None] = mapped_column(JSON, nullable=True)


class Annotation(Base):
    """The result of one finished segmentation session: the final mask as COCO RLE."""

    __tablename__ = "gateway_annotations"

    session_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    project_id: Mapped[str] = mapped_column(String(64), index=True)
    image_id: Mapped[str] = mapped_column(String(64))
    task_id: Mapped[str] = mapped_column(String(64))
    annotator_id: Mapped[str] = mapped_column(String(32))
    outcome: Mapped[str] = mapped_column(String(16))
    label: Mapped[str] = mapped_column(String(200))
    mask_height: Mapped[int] = mapped_column(Integer)
    mask_width: Mapped[int] = mapped_column(Integer)
    mask_counts: Mapped[str] = mapped_column(Text)
    area_px: Mapped[int] = mapped_column(Integer)
    click_count: Mapped[int] = mapped_column(Integer)
    seconds: Mapped[float] = mapped_column(Float)
    quality_operation_id: Mapped[str] = mapped_column(String(64))
    byproducts_operation_id: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(TZ)


class WebSession(Base):
    """A browser's login (migration 0007_gateway_web_sessions): the API key it was opened with, sealed
    with a secret that only the browser's HttpOnly cookie holds; the CSRF token its page sends back."""

    __tablename__ = "gateway_web_sessions"

    session_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    secret_sha256: Mapped[str] = mapped_column(String(64))
    key_id: Mapped[str] = mapped_column(String(32), index=True)
    sealed_key: Mapped[str] = mapped_column(Text)
    csrf_token: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(TZ)
    expires_at: Mapped[datetime] = mapped_column(TZ, index=True)
