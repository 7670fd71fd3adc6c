"""Celery tasks of the quality service, consumed from the ``quality`` queue.

Run: ``celery -A services.quality.worker:app worker -Q quality``.

``quality.annotation_submitted``: the loop's event of a submitted annotation (``AnnotationSubmitted``, sent
by the segmentation service's FinishSession), scored (with the project's own quality model when the training
service promoted one) and kept for the review queue.

``quality.project_model_published``: a project's quality model version promoted or rolled back by the
training service (``project_models.py``).
"""

from __future__ import annotations

from functools import lru_cache

from sqlalchemy.exc import OperationalError

from services.common import annotation_events
from services.common.celery_app import make_celery
from services.common.settings import get_settings
from services.common.storage import make_engine, make_session_factory
from services.quality.project_models import ProjectModels
from services.quality.scorer import Scorer
from services.quality.sessions import record_submitted
from services.quality.store import QualityStore

app = make_celery("quality")


@lru_cache(maxsize=1)
def _sessions():
    return make_session_factory(make_engine(get_settings().resolved_database_url))


@lru_cache(maxsize=1)
def _store() -> QualityStore:
    return QualityStore(_sessions())


@lru_cache(maxsize=1)
def _models() -> ProjectModels:
    return ProjectModels(_sessions(), Scorer.load())


@app.task(name="quality.annotation_submitted", autoretry_for=(OperationalError,), retry_backoff=True,
          max_retries=5)
def annotation_submitted(payload: dict) -> dict:
    """Scores a submitted annotation's session (``AnnotationSubmitted``) and stores it for the review queue;
    idempotent by session id. A malformed event fails the task (INVALID_ARGUMENT naming the field)."""
    event = annotation_events.decode(payload, label_required=False)
    return record_submitted(_store(), _models().scorer(event.project_id), event)


@app.task(name="quality.project_model_published", autoretry_for=(OperationalError,), retry_backoff=True,
          max_retries=5)
def project_model_published(project_id: str, version: int, weights_b64: str, figures: dict,
                            published_ns: int) -> dict:
    """Stores a project's published quality model (version 0: back on the shipped one); idempotent, and a
    publication older than the stored one changes nothing."""
    stored = _models().publish(project_id, version, weights_b64, figures, published_ns)
    return {"project_id": project_id, "version": version, "stored": stored}
