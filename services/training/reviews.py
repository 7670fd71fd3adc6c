"""Reviewed sessions the training service has received (``SessionReviewed``, Celery task
``training.session_reviewed``): what the quality model retrains on. The quality service owns reviews; it
sends each verdict that gives a true IoU, with the quality model's inputs for the session, so this wing never
reads the quality wing's tables nor recomputes its features. A later verdict on a session replaces the
earlier one.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np
from google.protobuf import json_format
from sqlalchemy import func, select
from sqlalchemy.orm import sessionmaker

from annotation.v1 import training_pb2
from services.common.errors import InvalidArgument
from services.training.tables import ReviewRow

MIN_TRAINING_SESSIONS = 8  # reviewed sessions in the training split the quality job needs


@dataclass(frozen=True)
class Review:
    project_id: str
    session_id: str
    image_id: str
    true_iou: float
    steps: np.ndarray  # (clicks, step features) float32
    session: np.ndarray  # (session features,) float32
    feature_names: dict
    base_probability_below: float


def decode(payload: dict) -> training_pb2.SessionReviewed:
    """The message of a ``training.session_reviewed`` task, checked; INVALID_ARGUMENT naming the field."""
    try:
        message = json_format.ParseDict(payload, training_pb2.SessionReviewed())
    except json_format.ParseError as exc:
        raise InvalidArgument("session_reviewed", str(exc)) from None
    for name in ("project_id", "session_id", "image_id"):
        if not getattr(message, name):
            raise InvalidArgument(name, "required", reason="REQUIRED")
    if not 0 <= message.true_iou <= 1:
        raise InvalidArgument("true_iou", f"{message.true_iou} is not in [0, 1]")
    if not message.steps or not message.session_features:
        raise InvalidArgument("steps", "the session's features are required")
    widths = {len(row.values) for row in message.steps}
    if len(widths) != 1 or (message.step_feature_names and widths != {len(message.step_feature_names)}):
        raise InvalidArgument("steps", "every row has one value per step feature")
    if message.session_feature_names and len(message.session_features) != len(message.session_feature_names):
        raise InvalidArgument("session_features", "one value per session feature")
    return message


class ReviewStore:
    def __init__(self, sessions: sessionmaker) -> None:
        self._sessions = sessions

    def record(self, m: training_pb2.SessionReviewed) -> None:
        values = {"image_id": m.image_id, "true_iou": float(m.true_iou),
                  "steps": [list(row.values) for row in m.steps], "session_features": list(m.session_features),
                  "feature_names": {"steps": list(m.step_feature_names), "session": list(m.session_feature_names)},
                  "base_probability_below": float(m.base_probability_below), "received_at": datetime.now(UTC)}
        with self._sessions.begin() as session:
            row = session.get(ReviewRow, (m.project_id, m.session_id))
            if row is None:
                session.add(ReviewRow(project_id=m.project_id, session_id=m.session_id, **values))
            else:
                for name, value in values.items():
                    setattr(row, name, value)

    def count(self, project_id: str) -> int:
        with self._sessions() as session:
            return int(session.scalar(select(func.count()).select_from(ReviewRow)
                                      .where(ReviewRow.project_id == project_id)) or 0)

    def reviews(self, project_id: str) -> list[Review]:
        with self._sessions() as session:
            rows = session.scalars(select(ReviewRow).where(ReviewRow.project_id == project_id)
                                   .order_by(ReviewRow.session_id))
            return [Review(r.project_id, r.session_id, r.image_id, float(r.true_iou),
                           np.asarray(r.steps, np.float32), np.asarray(r.session_features, np.float32),
                           dict(r.feature_names), float(r.base_probability_below)) for r in rows]
