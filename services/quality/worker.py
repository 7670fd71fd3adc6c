"""Celery tasks of the quality service, consumed from the ``quality`` queue.

Run: ``celery -A services.quality.worker:app worker -Q quality``.

``quality.annotation_submitted``: the loop's event of a submitted annotation (``AnnotationSubmitted``, sent
by the segmentation service's FinishSession), scored and kept for the review queue.
"""

from __future__ import annotations

from functools import lru_cache

from sqlalchemy.exc import OperationalError

from services.common import annotation_events
from services.common.celery_app import make_celery
from services.common.settings import get_settings
from services.common.storage import make_engine, make_session_factory
from services.quality.scorer import Scorer
from services.quality.sessions import record_submitted
from services.quality.store import QualityStore

app = make_celery("quality")


@lru_cache(maxsize=1)
def _store() -> QualityStore:
    return QualityStore(make_session_factory(make_engine(get_settings().resolved_database_url)))


@lru_cache(maxsize=1)
def _scorer() -> Scorer:
    return Scorer.load()


@app.task(name="quality.annotation_submitted", autoretry_for=(OperationalError,), retry_backoff=True,
          max_retries=5)
def annotation_submitted(payload: dict) -> dict:
    """Scores a submitted annotation's session (``AnnotationSubmitted``) and stores it for the review queue;
    idempotent by session id. A malformed event fails the task (INVALID_ARGUMENT naming the field)."""
    return record_submitted(_store(), _scorer(), annotation_events.decode(payload, label_required=False))
