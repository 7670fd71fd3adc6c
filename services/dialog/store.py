"""SQL store of the dialog service: issued questions, their answers, and the fitted models."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import select

from services.common.errors import FailedPrecondition, NotFound
from services.dialog.cost_model import Answer
from services.dialog.questions import SEGMENT, VERIFY
from services.dialog.tables import ModelRow, QuestionRow


@dataclass
class Issued:
    """A question about to be stored (the wire candidate travels as bytes)."""

    project_id: str
    annotator_id: str
    policy: str
    candidate_key: str
    candidate: bytes
    plan: list[list]
    step: int
    features: dict
    expected_seconds: float
    expected_gain: float
    acceptance_probability: float
    reason: str

    @property
    def type(self) -> str:
        return self.plan[self.step][0]

    @property
    def proposal(self) -> int | None:
        return self.plan[self.step][1]


class DialogStore:
    def __init__(self, sessions) -> None:
        self.sessions = sessions

    def issue(self, issued: Issued) -> QuestionRow:
        row = QuestionRow(question_id=str(uuid.uuid4()), project_id=issued.project_id,
                          annotator_id=issued.annotator_id, policy=issued.policy,
                          candidate_key=issued.candidate_key, candidate=issued.candidate, plan=issued.plan,
                          step=issued.step, type=issued.type, proposal=issued.proposal,
                          features=issued.features, expected_seconds=issued.expected_seconds,
                          expected_gain=issued.expected_gain,
                          acceptance_probability=issued.acceptance_probability, reason=issued.reason[:500],
                          created_at=datetime.now(UTC))
        with self.sessions.begin() as db:
            db.add(row)
            db.flush()
            db.expunge(row)
        return row

    def asked_keys(self, project_id: str, keys: list[str]) -> set[str]:
        """Candidate keys that already have a question in the project (asked, answered or open)."""
        if not keys:
            return set()
        with self.sessions() as db:
            return set(db.scalars(select(QuestionRow.candidate_key).where(
                QuestionRow.project_id == project_id, QuestionRow.candidate_key.in_(keys))))

    def get(self, project_id: str, question_id: str) -> QuestionRow:
        with self.sessions() as db:
            row = db.get(QuestionRow, question_id)
            if row is None or row.project_id != project_id:
                raise NotFound(f"question {question_id!r} not found in project {project_id!r}",
                               field="question_id")
            db.expunge(row)
            return row

    def answer(self, project_id: str, question_id: str, annotator_id: str, kind: str, answer: dict,
               seconds: float, accepted: bool | None, clicks: int | None) -> QuestionRow:
        """Records the answer once; a second answer is FAILED_PRECONDITION."""
        with self.sessions.begin() as db:
            row = db.get(QuestionRow, question_id, with_for_update=True)
            if row is None or row.project_id != project_id:
                raise NotFound(f"question {question_id!r} not found in project {project_id!r}",
                               field="question_id")
            if row.answered_at is not None:
                raise FailedPrecondition(f"question {question_id!r} was answered already", field="question_id",
                                         reason="ALREADY_ANSWERED")
            row.answered_at, row.answered_by, row.answer_kind = datetime.now(UTC), annotator_id, kind
            row.answer, row.seconds_taken, row.accepted, row.clicks = answer, seconds, accepted, clicks
            db.flush()
            db.expunge(row)
            return row

    def answers(self, project_id: str, annotator_id: str | None = None) -> list[Answer]:
        """The project's recorded answers (or one annotator's) as the models see them; skips left out."""
        query = select(QuestionRow).where(QuestionRow.project_id == project_id,
                                          QuestionRow.answered_at.is_not(None),
                                          QuestionRow.answer_kind != "skip")
        if annotator_id is not None:
            query = query.where(QuestionRow.answered_by == annotator_id)
        with self.sessions() as db:
            rows = db.scalars(query.order_by(QuestionRow.answered_at)).all()
        return [Answer(r.type, dict(r.features), float(r.seconds_taken or 0.0),
                       accepted=r.accepted if r.type == VERIFY else None,
                       clicks=r.clicks if r.type == SEGMENT else None,
                       from_proposal=r.type == SEGMENT and r.proposal is not None) for r in rows]

    def save_model(self, project_id: str, annotator_id: str, kind: str, params: dict, observations: int) -> None:
        with self.sessions.begin() as db:
            row = db.get(ModelRow, (project_id, annotator_id, kind))
            if row is None:
                row = ModelRow(project_id=project_id, annotator_id=annotator_id, kind=kind)
                db.add(row)
            row.params, row.observations, row.fit_time = params, observations, datetime.now(UTC)

    def model(self, project_id: str, annotator_id: str, kind: str) -> ModelRow | None:
        with self.sessions() as db:
            row = db.get(ModelRow, (project_id, annotator_id, kind))
            if row is not None:
                db.expunge(row)
            return row
