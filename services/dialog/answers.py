"""The answer a finished segmentation session gives to the dialog question it served, from the loop's event
(``AnnotationSubmitted``): a submitted mask is a segment answer, a skipped or abandoned session a skip.

Recorded once per question, idempotently by annotation id: a redelivered event finds its own answer and
changes nothing; an event of another annotation for an answered question is FAILED_PRECONDITION.
"""

from __future__ import annotations

from annotation.v1 import common_pb2
from services.common.annotation_events import SUBMITTED, outcome
from services.common.errors import FailedPrecondition, InvalidArgument, PermissionDenied
from services.dialog.questioner import Questioner
from services.dialog.store import DialogStore


def answer_of(event: common_pb2.AnnotationSubmitted) -> tuple[str, dict]:
    """(kind, answer) as RecordAnswer stores them, with the annotation id that makes it idempotent."""
    if outcome(event) == SUBMITTED:
        kind, answer = "segment", {"mask": {"size": list(event.mask.size), "counts": event.mask.counts},
                                   "label": event.label, "click_count": len(event.clicks),
                                   "segmentation_session_id": event.session_id}
    else:
        kind, answer = "skip", {"reason": common_pb2.SessionOutcome.Name(event.outcome).rsplit("_", 1)[-1].lower()}
    answer.update(byproducts_session_id=event.session_id, annotation_id=event.annotation_id)
    return kind, answer


def record_event(store: DialogStore, event: common_pb2.AnnotationSubmitted) -> dict:
    """Records the event's answer to its question; ``recorded`` is False for a repeat of the same annotation."""
    if not event.question_id:
        raise InvalidArgument("question_id", "the event answers no dialog question", reason="REQUIRED")
    question = store.get(event.project_id, event.question_id)
    if question.annotator_id and event.annotator_id and question.annotator_id != event.annotator_id:
        raise PermissionDenied(f"question {event.question_id!r} was asked of another annotator",
                               field="question_id")
    kind, answer = answer_of(event)
    result = {"project_id": event.project_id, "question_id": event.question_id,
              "annotation_id": event.annotation_id, "kind": kind}
    if question.answered_at is None:
        try:
            # A segment or skip answer has no follow-up: the question's candidate is not needed.
            Questioner(store).record(event.project_id, event.question_id, event.annotator_id, kind, answer,
                                     max(event.total_time_ms / 1000, 0.001))
            return {**result, "recorded": True}
        except FailedPrecondition:  # answered meanwhile (a concurrent delivery): see by whom below
            question = store.get(event.project_id, event.question_id)
    if (question.answer or {}).get("annotation_id") != event.annotation_id:
        raise FailedPrecondition(f"question {event.question_id!r} was answered already by another answer",
                                 field="question_id", reason="ALREADY_ANSWERED")
    return {**result, "recorded": False}
