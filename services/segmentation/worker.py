"""Celery tasks of the segmentation service, consumed from the ``segmentation`` queue.

Run: ``celery -A services.segmentation.worker:app worker -Q segmentation``.
"""

from services.common.celery_app import make_celery

app = make_celery("segmentation")
