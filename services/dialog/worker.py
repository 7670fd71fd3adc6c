"""Celery tasks of the dialog service, consumed from the ``dialog`` queue: recorded answers refit the
cost and acceptance models.

- ``dialog.annotation_submitted``: the loop's event (``AnnotationSubmitted``) of a segmentation session that
  served a dialog question: recorded once as the question's answer (``answers.py``), then the models refit.
- ``dialog.fit_models``: refits after an answer recorded through RecordAnswer.

Run: ``celery -A services.dialog.worker:app worker -Q dialog``.
"""

from __future__ import annotations

from functools import lru_cache

from sqlalchemy.exc import OperationalError

from services.common import annotation_events
from services.common.celery_app import make_celery
from services.common.settings import get_settings
from services.common.storage import make_engine, make_session_factory
from services.dialog.answers import record_event
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


@app.task(name="dialog.annotation_submitted", autoretry_for=(OperationalError,), retry_backoff=True,
          max_retries=5)
def annotation_submitted(payload: dict) -> dict:
    """Records a finished session (any outcome) as the answer to its question, then refits the models;
    idempotent by annotation id. A malformed event fails the task (INVALID_ARGUMENT naming the field)."""
    event = annotation_events.decode(payload, outcomes=annotation_events.ENDED, label_required=False)
    result = record_event(_store(), event)
    refit(_store(), event.project_id, event.annotator_id)  # also after a repeat: a refit that failed is redone
    return result
