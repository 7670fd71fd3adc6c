"""Tasks (questions issued to annotators) and annotations (finished sessions' masks).

The fallback question when no dialog policy answers: segment the project's next image that has no
submitted annotation, is not held by another annotator's open task (a lease), and that this
annotator has not skipped. An annotator's own open task is handed back first (a reload resumes).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import sessionmaker

from services.common.errors import FailedPrecondition, NotFound
from services.gateway.tables import Annotation, Image, Task

OPEN, SUBMITTED, SKIPPED = "OPEN", "SUBMITTED", "SKIPPED"
LEASE = timedelta(minutes=15)


@dataclass(frozen=True)
class Question:
    """What the dialog policy (or the fallback) asks; becomes a Task when issued."""

    image_id: str
    question_type: str = "SEGMENT"
    question_id: str = ""
    policy: str = "fallback"
    reason: str = ""
    prompt: str = "Segment the main object: left click on it, right click on background."


class WorkStore:
    def __init__(self, sessions: sessionmaker) -> None:
        self.sessions = sessions

    def open_task(self, project_id: str, assignee: str) -> Task | None:
        with self.sessions() as session:
            return session.scalars(select(Task).where(Task.project_id == project_id, Task.assignee == assignee,
                                                      Task.state == OPEN).order_by(Task.created_at)).first()

    def next_image(self, project_id: str, assignee: str) -> str | None:
        """The fallback choice: the first image (upload order) nobody finished or holds."""
        now = datetime.now(UTC)
        with self.sessions() as session:
            done = select(Annotation.image_id).where(Annotation.project_id == project_id,
                                                     Annotation.outcome == SUBMITTED)
            held = select(Task.image_id).where(Task.project_id == project_id, Task.state == OPEN,
                                               Task.updated_at > now - LEASE)
            skipped = select(Task.image_id).where(Task.project_id == project_id, Task.assignee == assignee,
                                                  Task.state == SKIPPED)
            return session.scalars(select(Image.image_id).where(
                Image.project_id == project_id, Image.image_id.not_in(done), Image.image_id.not_in(held),
                Image.image_id.not_in(skipped)).order_by(Image.position).limit(1)).first()

    def issue(self, project_id: str, assignee: str, question: Question) -> Task:
        now = datetime.now(UTC)
        task = Task(task_id=f"task_{uuid.uuid4().hex[:16]}", project_id=project_id, image_id=question.image_id,
                    question_type=question.question_type, question_id=question.question_id,
                    policy=question.policy, reason=question.reason, prompt=question.prompt, assignee=assignee,
                    state=OPEN, session_id=None, created_at=now, updated_at=now)
        with self.sessions.begin() as session:
            session.add(task)
        return task

    def task(self, project_id: str, task_id: str) -> Task:
        with self.sessions() as session:
            row = session.get(Task, task_id)
        if row is None or row.project_id != project_id:
            raise NotFound(f"no task {task_id!r} in project {project_id!r}", field="task_id")
        return row

    def tasks(self, project_id: str, state: str = "", offset: int = 0, limit: int = 100) -> list[Task]:
        query = select(Task).where(Task.project_id == project_id)
        if state:
            query = query.where(Task.state == state.upper())
        with self.sessions() as session:
            return list(session.scalars(query.order_by(Task.created_at).offset(offset).limit(limit)).all())

    def attach_session(self, task: Task, session_id: str) -> None:
        if task.state != OPEN:
            raise FailedPrecondition(f"task {task.task_id!r} is {task.state.lower()}", field="task_id")
        with self.sessions.begin() as session:
            row = session.get(Task, task.task_id)
            row.session_id, row.updated_at = session_id, datetime.now(UTC)

    def record(self, annotation: Annotation) -> Annotation:
        """Stores a finished session's result (idempotent per session) and closes its task."""
        with self.sessions.begin() as session:
            existing = session.get(Annotation, annotation.session_id)
            if existing is not None:
                return existing
            session.add(annotation)
            task = session.get(Task, annotation.task_id)
            if task is not None and task.state == OPEN:
                task.state = annotation.outcome if annotation.outcome in (SUBMITTED, SKIPPED) else OPEN
                task.updated_at = datetime.now(UTC)
        return annotation

    def annotation(self, project_id: str, session_id: str) -> Annotation:
        with self.sessions() as session:
            row = session.get(Annotation, session_id)
        if row is None or row.project_id != project_id:
            raise NotFound(f"no annotation of session {session_id!r} in project {project_id!r}",
                           field="session_id")
        return row

    def annotations(self, project_id: str, outcome: str = SUBMITTED) -> list[Annotation]:
        with self.sessions() as session:
            return list(session.scalars(select(Annotation).where(
                Annotation.project_id == project_id, Annotation.outcome == outcome)
                .order_by(Annotation.created_at)).all())
