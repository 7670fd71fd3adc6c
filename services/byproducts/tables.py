"""Tables of the byproducts service: sessions, their events (exactly once) and derived signals.

Events are keyed by (session_id, seq) and unique on (session_id, event_id), so a redelivered batch
inserts nothing twice (``INSERT ... ON CONFLICT DO NOTHING`` on SQLite and PostgreSQL alike). The
full event travels and is kept as its serialized ``annotation.v1.Event`` (``data``): lossless and
cheap to write; the columns beside it are what queries filter on. Events have no foreign key to
their session: batches may be persisted out of order, the session row follows from the events.
Schema changes go through ``migrations/versions/0002_byproducts.py``.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (JSON, BigInteger, DateTime, Float, Index, Integer, LargeBinary, SmallInteger, String,
                        UniqueConstraint)
from sqlalchemy.orm import Mapped, mapped_column

from services.common.storage import Base

ID = 128  # longest client-made id (session, event, annotator, task, image)


class EventRow(Base):
    __tablename__ = "byproduct_events"
    __table_args__ = (
        UniqueConstraint("session_id", "event_id", name="uq_byproduct_events_event_id"),
        Index("ix_byproduct_events_session_kind", "session_id", "kind"),
    )

    session_id: Mapped[str] = mapped_column(String(ID), primary_key=True)
    seq: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    event_id: Mapped[str] = mapped_column(String(ID))
    project_id: Mapped[str] = mapped_column(String(ID))
    kind: Mapped[int] = mapped_column(SmallInteger)
    t_ms: Mapped[int] = mapped_column(BigInteger)
    client_time_ms: Mapped[int | None] = mapped_column(BigInteger, nullable=True)  # epoch ms, client clock
    received_ms: Mapped[int] = mapped_column(BigInteger)  # epoch ms when the server accepted it
    data: Mapped[bytes] = mapped_column(LargeBinary)  # serialized annotation.v1.Event


class SessionRow(Base):
    __tablename__ = "byproduct_sessions"
    __table_args__ = (
        Index("ix_byproduct_sessions_project_start", "project_id", "start_time"),
        Index("ix_byproduct_sessions_task", "task_id"),
        Index("ix_byproduct_sessions_annotator", "annotator_id"),
        Index("ix_byproduct_sessions_image", "project_id", "image_id"),
    )

    session_id: Mapped[str] = mapped_column(String(ID), primary_key=True)
    project_id: Mapped[str] = mapped_column(String(ID))
    annotator_id: Mapped[str] = mapped_column(String(ID))
    task_id: Mapped[str] = mapped_column(String(ID))
    image_id: Mapped[str] = mapped_column(String(ID))
    question_type: Mapped[int] = mapped_column(SmallInteger)
    start_time: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    end_time: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    outcome: Mapped[int] = mapped_column(SmallInteger)
    data: Mapped[bytes] = mapped_column(LargeBinary)  # serialized annotation.v1.Session (end filled in)


class SignalsRow(Base):
    __tablename__ = "byproduct_signals"

    session_id: Mapped[str] = mapped_column(String(ID), primary_key=True)
    project_id: Mapped[str] = mapped_column(String(ID), index=True)
    time_to_first_click_ms: Mapped[int] = mapped_column(BigInteger)
    total_time_ms: Mapped[int] = mapped_column(BigInteger)
    active_time_ms: Mapped[int] = mapped_column(BigInteger)
    idle_gaps: Mapped[list] = mapped_column(JSON)  # [[start_ms, duration_ms], ...]
    idle_threshold_ms: Mapped[int] = mapped_column(Integer)
    click_count: Mapped[int] = mapped_column(Integer)
    correction_count: Mapped[int] = mapped_column(Integer)
    mouse_path_length: Mapped[float] = mapped_column(Float)
    clicks_per_minute: Mapped[float] = mapped_column(Float)
    category_change_count: Mapped[int] = mapped_column(Integer)
    keyboard_fraction: Mapped[float] = mapped_column(Float)
    complete: Mapped[int] = mapped_column(SmallInteger)
    compute_time: Mapped[datetime] = mapped_column(DateTime(timezone=True))
