"""Celery tasks of the selection service, consumed from the ``selection`` queue.

Run: ``celery -A services.selection.worker:app worker -Q selection``.
"""

from services.common.celery_app import make_celery

app = make_celery("selection")
