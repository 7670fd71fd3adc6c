"""Tasks (questions issued to annotators) and annotations (finished sessions' masks).

The fallback question when no dialog policy answers: segment the project's next image that has no
submitted annotation, is not held by another annotator's open task (a lease), and that this
annotator has not skipped. An annotator's own open task is handed back first (a reload resumes).

Leases: an open task holds its image for LEASE after its last touch. A key holds at most one lease per
project once it asks for a question (``hold_one`` releases its others); skipping releases the lease (and
the image is not asked of that key again); an abandoned session releases it too. ``held_by_others``
says how many images wait in other annotators' leases, so "nothing left" is not said while they do.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.orm import sessionmaker

from annotation.v1 import dialog_pb2
from services.common.errors import FailedPrecondition, NotFound
from services.gateway.tables import Annotation, Image, Task

OPEN, SUBMITTED, SKIPPED, RELEASED = "OPEN", "SUBMITTED", "SKIPPED", "RELEASED"
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
    # region {kind, box, mask}, proposal {mask | box}, proposed_label, plan: what the page draws; and
    # selection_model_version: whose scores picked the region
    detail: dict = field(default_factory=dict)


class WorkStore:
    def __init__(self, sessions: sessionmaker) -> None:
        self.sessions = sessions

    def open_task(self, project_id: str, assignee: str) -> Task | None:
        with self.sessions() as session:
            return session.scalars(select(Task).where(Task.project_id == project_id, Task.assignee == assignee,
                                                      Task.state == OPEN).order_by(Task.created_at)).first()

    def hold_one(self, project_id: str, assignee: str) -> Task | None:
        """The key's current task (its oldest open one), every other open task of the key in the project
        released: asking for a question leaves a key holding one image at most."""
        now = datetime.now(UTC)
        with self.sessions.begin() as session:
            tasks = session.scalars(select(Task).where(Task.project_id == project_id, Task.assignee == assignee,
                                                       Task.state == OPEN).order_by(Task.created_at)).all()
            for extra in tasks[1:]:
                extra.state, extra.updated_at = RELEASED, now
            return tasks[0] if tasks else None

    def close(self, task: Task, state: str) -> None:
        """Ends an open task without a result: SKIPPED (not asked of this key again) or RELEASED."""
        with self.sessions.begin() as session:
            row = session.get(Task, task.task_id)
            if row is not None and row.state == OPEN:
                row.state, row.updated_at = state, datetime.now(UTC)

    def held_by_others(self, project_id: str, assignee: str) -> tuple[int, datetime | None]:
        """Images without a submitted annotation that other keys' live leases hold, and when the first
        of those leases ends."""
        now = datetime.now(UTC)
        with self.sessions() as session:
            done = select(Annotation.image_id).where(Annotation.project_id == project_id,
                                                     Annotation.outcome == SUBMITTED)
            count, first = session.execute(
                select(func.count(func.distinct(Task.image_id)), func.min(Task.updated_at)).where(
                    Task.project_id == project_id, Task.state == OPEN, Task.assignee != assignee,
                    Task.updated_at > now - LEASE, Task.image_id.not_in(done))).one()
        if not count:
            return 0, None
        first = first if first.tzinfo else first.replace(tzinfo=UTC)  # SQLite gives naive datetimes
        return int(count), first + LEASE

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
                    state=OPEN, session_id=None, created_at=now, updated_at=now, detail=question.detail or None)
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
            if task is not None and task.state == OPEN:  # abandoned: the lease goes, the image may be asked again
                task.state = annotation.outcome if annotation.outcome in (SUBMITTED, SKIPPED) else RELEASED
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


def _box(box) -> list[float]:
    return [box.x, box.y, box.width, box.height]


def region_detail(region, width: int, height: int, pixels=None) -> dict:
    """A Region message as the page draws it: ``kind`` and, unless the whole image, its ``box`` [x, y, w, h]
    in image pixels (a patch clipped to the image); a superpixel also its ``mask`` (COCO RLE), from SLIC with
    selection's settings on ``pixels()`` (the image as an array), when given."""
    kind = region.WhichOneof("kind") or "whole_image"
    if kind == "box":
        return {"kind": kind, "box": _box(region.box)}
    if kind == "patch":
        p = region.patch
        x, y = p.col * p.size_px, p.row * p.size_px
        return {"kind": kind, "box": [x, y, max(0, min(p.size_px, width - x)), max(0, min(p.size_px, height - y))]}
    if kind == "superpixel" and pixels is not None and region.superpixel.n_segments:
        # only superpixel questions pay for importing SLIC
        import numpy as np
        from skimage.segmentation import slic

        from services.common.active_learning.regions import SLIC_SETTINGS
        from services.common.masks import encode_rle

        image = pixels()
        labels = slic(image, n_segments=region.superpixel.n_segments,
                      channel_axis=-1 if image.ndim == 3 else None, **SLIC_SETTINGS)
        inside = labels == region.superpixel.segment_id
        rows, cols = np.nonzero(inside)
        if rows.size:
            box = [int(cols.min()), int(rows.min()), int(cols.max() - cols.min() + 1), int(rows.max() - rows.min() + 1)]
            size, counts = encode_rle(inside)
            return {"kind": kind, "box": box, "mask": {"size": list(size), "counts": counts}}
    return {"kind": kind}


def question_detail(question, width: int, height: int, pixels=None) -> dict:
    """What a dialog Question shows besides its prompt: region, proposal (mask or box), proposed label, plan."""
    # the dialog's own region geometry when it sends it (region_box, region_mask); computed here otherwise
    given = question.HasField("region_box")
    region = region_detail(question.region, width, height, None if given else pixels)
    if given:
        region["box"] = _box(question.region_box)
        if question.HasField("region_mask"):
            region["mask"] = {"size": list(question.region_mask.size), "counts": question.region_mask.counts}
    # selection_model_version: the task model whose scores picked the region ("" for a uniform draw)
    detail = {"region": region, "proposal_source": question.proposal_source,
              "selection_model_version": question.selection_model_version,
              "proposed_label": question.proposed_label,
              "plan": [dialog_pb2.QuestionType.Name(t).removeprefix("QUESTION_TYPE_") for t in question.plan],
              "expected_seconds": question.expected_seconds,
              "acceptance_probability": question.acceptance_probability}
    which = question.WhichOneof("proposal")
    if which == "proposal_mask":
        detail["proposal"] = {"mask": {"size": list(question.proposal_mask.size),
                                       "counts": question.proposal_mask.counts}}
    elif which == "proposal_box":
        detail["proposal"] = {"box": _box(question.proposal_box)}
    return detail
