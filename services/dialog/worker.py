"""Celery tasks of the dialog service, consumed from the ``dialog`` queue: recorded answers refit the
cost and acceptance models.

Run: ``celery -A services.dialog.worker:app worker -Q dialog``.
"""

from __future__ import annotations

from functools import lru_cache

from services.common.celery_app import make_celery
from services.common.settings import get_settings
from services.common.storage import make_engine, make_session_factory
from services.dialog.learning import FIT_MODELS, refit
from services.dialog.store import DialogStore

app = make_celery("dialog")


@lru_cache(maxsize=1)
def _store() -> DialogStore:
    return DialogStore(make_session_factory(make_engine(get_settings().resolved_database_url)))


@app.task(name=FIT_MODELS)
def fit_models(project_id: str, annotator_id: str = "") -> dict:
    """Refits the project's (and the annotator's) models from every recorded answer; idempotent."""
    return refit(_store(), project_id, annotator_id)
