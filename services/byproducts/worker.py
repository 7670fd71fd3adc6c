"""Celery tasks of the byproducts service, consumed from the ``byproducts`` queue.

Run: ``celery -A services.byproducts.worker:app worker -Q byproducts``.

``byproducts.persist_batch`` carries the id of one admitted chunk of events waiting in the outbox and
is idempotent: a message redelivered after the worker died, or re-sent from the outbox, stores
nothing twice; the batch leaves the outbox only once it is stored.

``byproducts.annotation_submitted`` carries the loop's event (``AnnotationSubmitted``) of a finished
segmentation session, whatever its outcome (``segmentation_summary.py``).
"""

from __future__ import annotations

import logging
import time
from functools import lru_cache

from redis import Redis
from sqlalchemy import Engine
from sqlalchemy.exc import OperationalError

from services.byproducts.config import ByproductsSettings
from services.byproducts.ingest import Ingestor, decode_batch
from services.byproducts.outbox import Outbox
from services.byproducts.persist import persist
from services.byproducts.segmentation_summary import events_of
from services.common import annotation_events
from services.common.celery_app import make_celery
from services.common.settings import get_settings
from services.common.storage import make_engine

app = make_celery("byproducts")
log = logging.getLogger(__name__)


@lru_cache(maxsize=1)
def _engine() -> Engine:  # per worker process, created after the fork
    return make_engine(get_settings().resolved_database_url)


@lru_cache(maxsize=1)
def _config() -> ByproductsSettings:
    return ByproductsSettings()


@app.task(name="byproducts.persist_batch", ignore_result=True, autoretry_for=(OperationalError,),
          retry_backoff=True, retry_backoff_max=60, max_retries=20)
def persist_batch(batch_id: str) -> dict:
    """Store one outbox batch of admitted events; retried with backoff while the store is unreachable."""
    outbox = _outbox()
    batch = outbox.get(batch_id)
    if batch is None:  # stored already: this is a redelivery or a re-send
        return {"events": 0, "batch": batch_id, "stored_before": True}
    payload, received_ms = batch
    result = persist(_engine(), decode_batch(payload), received_ms, _config().idle_threshold_ms)
    outbox.done(batch_id)
    return result


@lru_cache(maxsize=1)
def _ingestor() -> Ingestor:
    return Ingestor(Redis.from_url(get_settings().redis_url), _no_enqueue, _config())


def _outbox() -> Outbox:
    return _ingestor().outbox


def _no_enqueue(batch_id: str) -> None:
    raise RuntimeError("the worker persists admitted summaries itself")


@app.task(name="byproducts.annotation_submitted", autoretry_for=(OperationalError,),
          retry_backoff=True, retry_backoff_max=60, max_retries=20)
def annotation_submitted(payload: dict) -> dict:
    """A finished segmentation session (``AnnotationSubmitted``, any outcome) kept as byproducts, unless the
    client recorded it; idempotent (event ids derived from the session id). A malformed event fails the task
    (INVALID_ARGUMENT naming the field)."""
    event = annotation_events.decode(payload, outcomes=annotation_events.ENDED, label_required=False)
    events = events_of(event)
    admission = _ingestor().admit(events, list(range(len(events))), all_or_nothing=True)
    if admission.errors:
        log.info("segmentation session not kept: %s", admission.errors[0],
                 extra={"session_id": events[0].session_id})
        return {"events": 0, "refused": str(admission.errors[0])}
    return persist(_engine(), admission.new + admission.duplicates, int(time.time() * 1000),
                   _config().idle_threshold_ms)
