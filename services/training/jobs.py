"""Training jobs: at most one running job per project and kind.

A job's row holds ``active = 1`` while it may run; the unique (project, kind, active) index refuses a
second one (NULLs never collide, so finished jobs pile up freely). A job whose worker was killed
without finishing its row (a cancel terminates the process) would block its project forever, so a
starting job asks whether the blocking one really still runs (``is_finished``: its Celery state) and
takes over from a finished one.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import sessionmaker

from services.common.errors import FailedPrecondition
from services.training.tables import JobRow


@dataclass(frozen=True)
class Job:
    operation_id: str
    project_id: str
    kind: str
    snapshot_id: str
    config: dict
    outcome: str


class JobStore:
    def __init__(self, sessions: sessionmaker) -> None:
        self._sessions = sessions

    def start(self, operation_id: str, project_id: str, kind: str, snapshot_id: str, config: dict,
              is_finished: Callable[[str], bool]) -> None:
        """Records a running job; FAILED_PRECONDITION naming ``kind`` while another of the project's jobs of
        that kind runs."""
        for _ in range(3):
            try:
                with self._sessions.begin() as session:
                    session.add(JobRow(operation_id=operation_id, project_id=project_id, kind=kind,
                                       snapshot_id=snapshot_id, config=config, active=1, outcome="",
                                       created_at=datetime.now(UTC)))
                return
            except IntegrityError:
                running = self.running(project_id, kind)
                if running is None:
                    continue  # finished in between
                if not is_finished(running.operation_id):
                    raise FailedPrecondition(
                        f"a {kind} training job of project {project_id!r} is running (operation "
                        f"{running.operation_id}); wait for it or cancel it", field="kind") from None
                self.finish(running.operation_id, "ended without report")
        raise FailedPrecondition(f"could not start a {kind} training job of project {project_id!r}", field="kind")

    def running(self, project_id: str, kind: str) -> Job | None:
        with self._sessions() as session:
            row = session.scalar(select(JobRow).where(JobRow.project_id == project_id, JobRow.kind == kind,
                                                      JobRow.active == 1))
        return None if row is None else Job(row.operation_id, row.project_id, row.kind, row.snapshot_id,
                                            dict(row.config), row.outcome)

    def latest(self, project_id: str, kind: str) -> Job | None:
        """The project's most recently started job of ``kind``, however it ended."""
        with self._sessions() as session:
            row = session.scalars(select(JobRow).where(JobRow.project_id == project_id, JobRow.kind == kind)
                                  .order_by(JobRow.created_at.desc()).limit(1)).first()
        return None if row is None else Job(row.operation_id, row.project_id, row.kind, row.snapshot_id,
                                            dict(row.config), row.outcome)

    def finish(self, operation_id: str, outcome: str) -> None:
        """The job no longer blocks its project; idempotent (the first outcome stays)."""
        with self._sessions.begin() as session:
            session.execute(update(JobRow).where(JobRow.operation_id == operation_id, JobRow.active == 1)
                            .values(active=None, outcome=outcome[:32], finished_at=datetime.now(UTC)))
