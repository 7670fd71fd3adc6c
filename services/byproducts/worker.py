"""Celery tasks of the byproducts service, consumed from the ``byproducts`` queue.

Run: ``celery -A services.byproducts.worker:app worker -Q byproducts``.

``byproducts.persist_events`` carries one admitted chunk of events (a serialized EventBatch) and is
idempotent: with acks_late a message redelivered after the worker died stores nothing twice.
"""

from __future__ import annotations

from functools import lru_cache

from sqlalchemy import Engine
from sqlalchemy.exc import OperationalError

from services.byproducts.config import ByproductsSettings
from services.byproducts.ingest import decode_batch
from services.byproducts.persist import persist
from services.common.celery_app import make_celery
from services.common.settings import get_settings
from services.common.storage import make_engine

app = make_celery("byproducts")


@lru_cache(maxsize=1)
def _engine() -> Engine:  # per worker process, created after the fork
    return make_engine(get_settings().resolved_database_url)


@lru_cache(maxsize=1)
def _config() -> ByproductsSettings:
    return ByproductsSettings()


@app.task(name="byproducts.persist_events", ignore_result=True, autoretry_for=(OperationalError,),
          retry_backoff=True, retry_backoff_max=60, max_retries=20)
def persist_events(payload: str, received_ms: int) -> dict:
    """Store one chunk of admitted events; retried with backoff while the store is unreachable."""
    return persist(_engine(), decode_batch(payload), received_ms, _config().idle_threshold_ms)
