"""Celery app factory: Redis broker and result backend, one named queue per service.

Tasks are named ``<service>.<task>`` and routed by that prefix, so a service hands work to another
with ``app.send_task("byproducts.persist_batch", ...)`` without importing its code.
"""

from __future__ import annotations

import os
import socket

from celery import Celery, Task
from celery.signals import setup_logging

from services.common.logs import configure_logging
from services.common.metrics import install_worker_metrics
from services.common.settings import SERVICES, Settings, get_settings


def make_celery(service: str, settings: Settings | None = None) -> Celery:
    if service not in SERVICES:
        raise ValueError(f"unknown service {service!r}; one of {', '.join(SERVICES)}")
    settings = settings or get_settings()
    app = Celery(f"annotation.{service}", broker=settings.redis_url, backend=settings.redis_url)
    app.conf.update(
        task_default_queue=service,
        task_routes={f"{name}.*": {"queue": name} for name in SERVICES},
        # At-least-once: ack after the task ran, redeliver if the worker died; tasks are idempotent.
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        task_time_limit=settings.celery_task_time_limit_s,
        task_soft_time_limit=settings.celery_task_soft_time_limit_s,
        task_track_started=True,
        result_extended=True,
        result_expires=settings.operation_ttl_s,
        broker_transport_options=_transport_options(settings, service),
        broker_connection_retry_on_startup=True,
        worker_hijack_root_logger=False,
        worker_send_task_events=False,
    )

    @setup_logging.connect(weak=False)
    def _json_logs(**_kwargs) -> None:
        configure_logging(f"{service}-worker", settings)

    install_worker_metrics(app, service, settings)

    @app.task(name=f"{service}.probe")
    def probe() -> dict:
        """Answers through the queue, proving broker -> worker -> result backend works."""
        return {"queue": service, "hostname": socket.gethostname(), "pid": os.getpid()}

    return app


def _transport_options(settings: Settings, service: str) -> dict:
    """Redelivery of a dead worker's unacknowledged tasks within about a visibility timeout.

    Kombu sweeps for them only every interval x throttle seconds (100 s by default) and guards the
    sweep with a mutex that a worker killed mid-sweep holds for 300 s; both are scaled to the
    visibility timeout, or a short one would not shorten anything.
    """
    visibility = min(settings.celery_visibility_timeout_s,
                     settings.celery_visibility_timeout_by_queue.get(service, settings.celery_visibility_timeout_s))
    return {"visibility_timeout": visibility,
            "unacked_restore_interval": max(1, min(10, visibility // 2)),
            "unacked_restore_throttle": 1,
            "unacked_mutex_expire": max(5, min(300, visibility))}


def report_progress(task: Task, done: int, total: int, message: str = "") -> None:
    """Progress of a long task, read back by Operations.GetOperation."""
    task.update_state(state="PROGRESS", meta={"progress": done / total if total else 0.0, "message": message})
