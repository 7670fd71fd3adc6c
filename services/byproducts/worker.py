"""Celery tasks of the byproducts service, consumed from the ``byproducts`` queue.

Run: ``celery -A services.byproducts.worker:app worker -Q byproducts``.
"""

from services.common.celery_app import make_celery

app = make_celery("byproducts")
