"""Each project scored by its own promoted quality model, the shipped one otherwise.

The training service retrains a project's quality model on its reviewed sessions and, when a version is
promoted (or rolled back), publishes it here as the Celery task ``quality.project_model_published``: the
weights travel in the message (an ensemble of small GRUs, tens of kilobytes), so the quality pods need no
volume shared with the training worker. The message is stored in ``quality_project_models``; a scorer is
built once per (project, published version) and reused until the row changes.
"""

from __future__ import annotations

import base64
from datetime import UTC, datetime

from sqlalchemy import select
from sqlalchemy.orm import sessionmaker

from services.common.errors import InvalidArgument
from services.quality import features
from services.quality.scorer import Scorer
from services.quality.tables import ProjectModelRow

MAX_WEIGHTS_BYTES = 16 * 1024 * 1024


def model_version(project_id: str, version: int) -> str:
    """The ``model_version`` a project's scores carry (the shipped model's is its weights' hash)."""
    return f"project:{project_id}:v{version}"


class ProjectModels:
    """``scorer(project_id)``: the project's promoted quality model, else ``base``."""

    def __init__(self, sessions: sessionmaker, base: Scorer) -> None:
        self.sessions, self.base = sessions, base
        self._built: dict[str, tuple[int, Scorer]] = {}  # project -> (published_ns, scorer)

    def publish(self, project_id: str, version: int, weights_b64: str, figures: dict, published_ns: int) -> bool:
        """Stores a published version (``version`` 0, no weights: back on the shipped model); False when a
        newer publication is already stored (messages may arrive out of order)."""
        if not project_id:
            raise InvalidArgument("project_id", "required")
        if version < 0 or (version == 0) != (not weights_b64):
            raise InvalidArgument("version", "a positive version with weights, or 0 without (withdrawn)")
        try:
            weights = base64.b64decode(weights_b64, validate=True)
        except ValueError:
            raise InvalidArgument("weights", "not base64") from None
        if len(weights) > MAX_WEIGHTS_BYTES:
            raise InvalidArgument("weights", f"{len(weights)} bytes is over the limit of {MAX_WEIGHTS_BYTES}")
        if weights:
            try:
                norm = Scorer.from_bytes(weights, model_version(project_id, version)).ensemble.norm
            except Exception as exc:  # noqa: BLE001 (whatever torch says: these bytes cannot score)
                raise InvalidArgument("weights", f"not a quality model ({type(exc).__name__}: {exc})"[:300]) from None
            shape = (len(norm["step_mean"]), len(norm["session_mean"]))
            if shape != (len(features.STEP_FEATURES), len(features.SESSION_FEATURES)):
                raise InvalidArgument("weights", f"a model of {shape[0]} click and {shape[1]} session features; this "
                                      f"service extracts {len(features.STEP_FEATURES)} and "
                                      f"{len(features.SESSION_FEATURES)}")
        with self.sessions.begin() as session:
            row = session.get(ProjectModelRow, project_id, with_for_update=True)
            if row is not None and row.published_ns >= published_ns:
                return False
            if row is None:
                row = ProjectModelRow(project_id=project_id)
                session.add(row)
            row.version, row.weights, row.figures = version, weights, dict(figures)
            row.published_ns, row.received_at = published_ns, datetime.now(UTC)
        return True

    def scorer(self, project_id: str) -> Scorer:
        with self.sessions() as session:
            found = session.execute(select(ProjectModelRow.published_ns, ProjectModelRow.version).where(
                ProjectModelRow.project_id == project_id)).first()
        if found is None or found.version == 0:
            return self.base
        built = self._built.get(project_id)
        if built is None or built[0] != found.published_ns:
            with self.sessions() as session:
                row = session.get(ProjectModelRow, project_id)
                if row is None or row.version == 0:  # withdrawn between the two reads
                    return self.base
                built = (row.published_ns, Scorer.from_bytes(row.weights, model_version(project_id, row.version),
                                                             {**self.base.card, "project_figures": row.figures}))
            self._built[project_id] = built
        return built[1]
