"""The model registry: every trained model of a project is a numbered version of its kind.

A version records its project, kind, parent (the version it was compared against at the gate, or
fine-tuned from; 0 is the base model), snapshot, command and configuration, figures on the snapshot's
held-out annotations, the gate's decision, and its state:

    candidate --gate passed, published--> promoted --rollback--> rolled_back
        \\--gate failed--> rejected           (a rejected or rolled-back version is promoted again only
                                               with force, recorded in its gate)

The project's *current* version of a kind is the promoted one promoted last; none means the base model.
Registration is idempotent by operation id, so a redelivered training job finds its own version.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import sessionmaker

from services.common.errors import FailedPrecondition, InvalidArgument, NotFound
from services.training.snapshots import utc
from services.training.tables import ModelRow

KINDS = ("interactive", "task", "quality")
CANDIDATE, PROMOTED, REJECTED, ROLLED_BACK = "candidate", "promoted", "rejected", "rolled_back"


@dataclass(frozen=True)
class ModelVersion:
    project_id: str
    kind: str
    version: int
    parent_version: int
    snapshot_id: str
    state: str
    command: str
    config: dict
    figures: dict
    gate: dict
    class_names: list[str]
    artifact: str
    triton_model_name: str
    operation_id: str
    created_at: datetime
    promote_time: datetime | None
    updated_at: datetime


def _version(row: ModelRow) -> ModelVersion:
    return ModelVersion(row.project_id, row.kind, row.version, row.parent_version, row.snapshot_id, row.state,
                        row.command, dict(row.config), dict(row.figures), dict(row.gate), list(row.class_names),
                        row.artifact, row.triton_model_name, row.operation_id, utc(row.created_at),
                        utc(row.promote_time), utc(row.updated_at))


@dataclass(frozen=True)
class Gate:
    """A candidate against the current version (or the base) on one figure of the same held-out images."""

    metric: str
    candidate: float
    current: float
    current_version: int  # 0: the base model
    higher_is_better: bool = True
    min_improvement: float = 0.0
    extra: dict = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        gain = self.candidate - self.current if self.higher_is_better else self.current - self.candidate
        return gain > self.min_improvement

    def record(self) -> dict:
        against = f"version {self.current_version}" if self.current_version else "the base model"
        verdict = "beats" if self.passed else "does not beat"
        return {"metric": self.metric, "candidate": self.candidate, "current": self.current,
                "current_version": self.current_version, "higher_is_better": self.higher_is_better,
                "min_improvement": self.min_improvement, "passed": self.passed, "forced": False,
                "reason": f"{self.metric} {self.candidate:.4f} {verdict} {against} ({self.current:.4f})",
                **self.extra}


def check_kind(kind: str, field_name: str = "kind") -> str:
    if kind not in KINDS:
        raise InvalidArgument(field_name, f"one of {', '.join(k.upper() for k in KINDS)}", reason="REQUIRED")
    return kind


class Registry:
    def __init__(self, sessions: sessionmaker) -> None:
        self._sessions = sessions

    def register(self, *, project_id: str, kind: str, operation_id: str, snapshot_id: str, parent_version: int,
                 command: str, config: dict, class_names: list[str], artifact: Callable[[int], str]) -> ModelVersion:
        """A new candidate (the next version number), or the version this operation registered before.
        ``artifact(version)`` names where its weights are kept."""
        for _ in range(5):
            found = self.by_operation(operation_id)
            if found is not None:
                return found
            now = datetime.now(UTC)
            try:
                with self._sessions.begin() as session:
                    latest = session.scalar(select(func.max(ModelRow.version)).where(
                        ModelRow.project_id == project_id, ModelRow.kind == kind)) or 0
                    row = ModelRow(project_id=project_id, kind=kind, version=latest + 1, parent_version=parent_version,
                                   snapshot_id=snapshot_id, state=CANDIDATE, command=command, config=config, figures={},
                                   gate={}, class_names=class_names, artifact=artifact(latest + 1),
                                   triton_model_name="", operation_id=operation_id, created_at=now, promote_time=None,
                                   updated_at=now)
                    session.add(row)
                return _version(row)
            except IntegrityError:  # another job took that number (or registered this operation): look again
                continue
        raise FailedPrecondition(f"could not allocate a version of {kind} for project {project_id!r}", field="kind")

    def by_operation(self, operation_id: str) -> ModelVersion | None:
        with self._sessions() as session:
            row = session.scalar(select(ModelRow).where(ModelRow.operation_id == operation_id))
        return None if row is None else _version(row)

    def get(self, project_id: str, kind: str, version: int) -> ModelVersion:
        with self._sessions() as session:
            row = session.get(ModelRow, (project_id, kind, version))
        if row is None:
            raise NotFound(f"no {kind} model version {version} in project {project_id!r}", field="version")
        return _version(row)

    def current(self, project_id: str, kind: str) -> ModelVersion | None:
        with self._sessions() as session:
            row = session.scalars(select(ModelRow).where(
                ModelRow.project_id == project_id, ModelRow.kind == kind, ModelRow.state == PROMOTED)
                .order_by(ModelRow.promote_time.desc(), ModelRow.version.desc()).limit(1)).first()
        return None if row is None else _version(row)

    def previous(self, project_id: str, kind: str, version: int) -> ModelVersion | None:
        """The promoted version that would be current without ``version``."""
        with self._sessions() as session:
            row = session.scalars(select(ModelRow).where(
                ModelRow.project_id == project_id, ModelRow.kind == kind, ModelRow.state == PROMOTED,
                ModelRow.version != version)
                .order_by(ModelRow.promote_time.desc(), ModelRow.version.desc()).limit(1)).first()
        return None if row is None else _version(row)

    def list(self, project_id: str, kind: str | None, offset: int, limit: int) -> tuple[list[ModelVersion], int]:
        where = [ModelRow.project_id == project_id] + ([ModelRow.kind == kind] if kind else [])
        with self._sessions() as session:
            total = int(session.scalar(select(func.count()).select_from(ModelRow).where(*where)) or 0)
            rows = session.scalars(select(ModelRow).where(*where).order_by(
                ModelRow.created_at.desc(), ModelRow.kind, ModelRow.version.desc()).offset(offset).limit(limit))
            return [_version(r) for r in rows], total

    def known_project(self, project_id: str) -> bool:
        with self._sessions() as session:
            return session.scalar(select(ModelRow.version).where(ModelRow.project_id == project_id).limit(1)) is not None

    def update(self, mv: ModelVersion, **values) -> ModelVersion:
        """Sets columns of ``mv`` (``state``, ``figures``, ``gate``, ``triton_model_name``); promoting stamps
        ``promote_time``."""
        now = datetime.now(UTC)
        with self._sessions.begin() as session:
            row = session.get(ModelRow, (mv.project_id, mv.kind, mv.version))
            for name, value in values.items():
                setattr(row, name, value)
            if values.get("state") == PROMOTED:
                row.promote_time = now
            row.updated_at = now
        return self.get(mv.project_id, mv.kind, mv.version)
