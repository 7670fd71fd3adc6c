"""Celery tasks of the quality service, consumed from the ``quality`` queue.

Run: ``celery -A services.quality.worker:app worker -Q quality``.
"""

from __future__ import annotations

from functools import lru_cache

from sqlalchemy.exc import OperationalError

from services.common.celery_app import make_celery
from services.common.settings import get_settings
from services.common.storage import make_engine, make_session_factory
from services.quality.scorer import Scorer
from services.quality.sessions import record_finished
from services.quality.store import QualityStore

app = make_celery("quality")


@lru_cache(maxsize=1)
def _store() -> QualityStore:
    return QualityStore(make_session_factory(make_engine(get_settings().resolved_database_url)))


@lru_cache(maxsize=1)
def _scorer() -> Scorer:
    return Scorer.load()


@app.task(name="quality.score_session", autoretry_for=(OperationalError,), retry_backoff=True, max_retries=5)
def score_session(payload: dict) -> dict:
    """Scores a finished segmentation session (the FinishSession payload) and stores it for the review
    queue; idempotent by session id. A malformed payload fails the task (INVALID_ARGUMENT in its error)."""
    return record_finished(_store(), _scorer(), payload)
