"""Celery tasks of the dialog service, consumed from the ``dialog`` queue.

Run: ``celery -A services.dialog.worker:app worker -Q dialog``.
"""

from services.common.celery_app import make_celery

app = make_celery("dialog")
