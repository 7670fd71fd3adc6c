"""Celery tasks of the quality service, consumed from the ``quality`` queue.

Run: ``celery -A services.quality.worker:app worker -Q quality``.
"""

from services.common.celery_app import make_celery

app = make_celery("quality")
