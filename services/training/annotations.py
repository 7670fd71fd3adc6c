"""The annotations the training service has received: one row per ``AnnotationSubmitted`` event.

Recording is idempotent by (project, annotation id): a redelivered or repeated event changes nothing
(its first copy stays, so a snapshot never shifts under a retry). Every received annotation is
*accepted* until a review rejects it; snapshots take accepted ones only.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime

from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import sessionmaker

from annotation.v1 import common_pb2
from services.common.errors import InvalidArgument, NotFound
from services.training.tables import AnnotationRow

ACCEPTED, REJECTED = "accepted", "rejected"
STATES = (ACCEPTED, REJECTED)


@dataclass(frozen=True)
class Annotation:
    project_id: str
    annotation_id: str
    image_id: str
    uri: str
    width: int
    height: int
    label: str
    mask_counts: str
    clicks: list[dict] = field(default_factory=list)  # {x, y, positive, t_ms, index}
    session_id: str = ""
    task_id: str = ""
    annotator_id: str = ""
    model_version: str = ""
    total_time_ms: int = 0
    pseudo_label: bool = False
    submit_time: datetime | None = None


class AnnotationStore:
    def __init__(self, sessions: sessionmaker) -> None:
        self._sessions = sessions

    def record(self, a: Annotation) -> bool:
        """Stores ``a``; False when an annotation of that id was there already (left as it was)."""
        now = datetime.now(UTC)
        row = AnnotationRow(
            project_id=a.project_id, annotation_id=a.annotation_id, session_id=a.session_id, task_id=a.task_id,
            annotator_id=a.annotator_id, image_id=a.image_id, uri=a.uri, width=a.width, height=a.height,
            label=a.label, mask_counts=a.mask_counts, clicks=list(a.clicks), model_version=a.model_version,
            total_time_ms=a.total_time_ms, pseudo_label=a.pseudo_label, state=ACCEPTED,
            submit_time=a.submit_time or now, received_at=now)
        with self._sessions() as session:
            if session.get(AnnotationRow, (a.project_id, a.annotation_id)) is not None:
                return False
            session.add(row)
            try:
                session.commit()
            except IntegrityError:  # the same event, recorded by another worker in between
                session.rollback()
                return False
        return True

    def set_state(self, project_id: str, annotation_id: str, state: str) -> None:
        """A review's verdict: ``rejected`` leaves the annotation out of later snapshots."""
        if state not in STATES:
            raise InvalidArgument("state", f"one of {', '.join(STATES)}")
        with self._sessions.begin() as session:
            done = session.execute(update(AnnotationRow).where(
                AnnotationRow.project_id == project_id, AnnotationRow.annotation_id == annotation_id)
                .values(state=state)).rowcount
        if not done:
            raise NotFound(f"no annotation {annotation_id!r} in project {project_id!r}", field="annotation_id")

    def count(self, project_id: str, state: str | None = None) -> int:
        query = select(func.count()).select_from(AnnotationRow).where(AnnotationRow.project_id == project_id)
        if state is not None:
            query = query.where(AnnotationRow.state == state)
        with self._sessions() as session:
            return int(session.scalar(query) or 0)

    def accepted(self, project_id: str) -> list[AnnotationRow]:
        with self._sessions() as session:
            return list(session.scalars(select(AnnotationRow).where(
                AnnotationRow.project_id == project_id, AnnotationRow.state == ACCEPTED)
                .order_by(AnnotationRow.annotation_id)))


def annotation_of(event: common_pb2.AnnotationSubmitted) -> Annotation:
    """The stored form of one decoded ``AnnotationSubmitted`` event."""
    return Annotation(
        project_id=event.project_id, annotation_id=event.annotation_id, image_id=event.image.image_id,
        uri=event.image.uri, width=event.image.width, height=event.image.height, label=event.label,
        mask_counts=event.mask.counts,
        clicks=[{"x": c.x, "y": c.y, "positive": c.positive, "t_ms": c.t_ms, "index": c.index} for c in event.clicks],
        session_id=event.session_id, task_id=event.task_id, annotator_id=event.annotator_id,
        model_version=event.model_version, total_time_ms=event.total_time_ms, pseudo_label=event.pseudo_label,
        submit_time=event.submit_time.ToDatetime(tzinfo=UTC) if event.HasField("submit_time") else None)
