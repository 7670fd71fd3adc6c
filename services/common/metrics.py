"""Prometheus metrics of the gateway (HTTP) and of the Celery workers (tasks, queue length).

The gRPC servers have theirs in ``interceptors.py``. Every process serves its metrics on a port of
its own (``Settings.metrics_port``), never on the public gateway port.

Celery's prefork pool runs tasks in child processes, so a worker counts them in prometheus_client's
multiprocess mode: its launcher sets ``PROMETHEUS_MULTIPROC_DIR`` (one directory per worker) before
Python starts, because the client picks its storage when it is first imported.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from pathlib import Path

from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.multiprocess import MultiProcessCollector
from redis import Redis
from redis.exceptions import RedisError
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from services.common.settings import QUEUES, Settings

log = logging.getLogger(__name__)

HTTP_REQUESTS = Counter("http_requests_total", "HTTP requests answered, by route template and status.",
                        ["method", "route", "status"])
HTTP_LATENCY = Histogram("http_request_duration_seconds", "HTTP request handling time in seconds.",
                         ["method", "route"],
                         buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30))
TASKS = Counter("celery_tasks_total", "Celery tasks finished, by outcome (succeeded, failed, retried).",
                ["task", "outcome"])
TASK_SECONDS = Histogram("celery_task_duration_seconds", "Celery task run time in seconds.", ["task"],
                         buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 1800))


class HttpMetrics:
    """ASGI middleware; labels by the matched route's template (``/v1/sessions/{session_id}``), so an
    attacker probing random paths cannot grow the label set."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500  # what the client gets if the app raises before answering

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            route = getattr(scope.get("route"), "path", None) or "unmatched"
            HTTP_REQUESTS.labels(scope["method"], route, str(status)).inc()
            HTTP_LATENCY.labels(scope["method"], route).observe(time.perf_counter() - start)


class QueueLength:
    """``celery_queue_length{queue}``: messages waiting in the worker's Redis lists, read at scrape time."""

    def __init__(self, redis_url: str, queues: list[str]) -> None:
        self._redis = Redis.from_url(redis_url, socket_timeout=2, socket_connect_timeout=2)
        self._queues = queues

    def collect(self):
        family = GaugeMetricFamily("celery_queue_length", "Messages waiting on the queue.", labels=["queue"])
        try:
            for queue in self._queues:
                family.add_metric([queue], float(self._redis.llen(queue)))
        except RedisError:  # a scrape during a Redis outage shows the gap rather than failing
            return []
        return [family]


def install_worker_metrics(app, service: str, settings: Settings) -> None:
    """Count the tasks of ``app`` and serve them, with the queue lengths, when a worker starts.

    The port follows the first queue the worker consumes (``-Q``), so that the segmentation app's
    ``video`` worker and its ``segmentation`` worker can share a host.
    """
    from celery import signals  # noqa: PLC0415 - the gateway imports this module without Celery

    started: dict[str, float] = {}

    @signals.task_prerun.connect(weak=False)
    def _prerun(task_id=None, **_kw) -> None:
        started[task_id] = time.perf_counter()

    @signals.task_postrun.connect(weak=False)
    def _postrun(task_id=None, task=None, state=None, **_kw) -> None:
        begin = started.pop(task_id, None)
        if task is None or not task.name.startswith(f"{service}."):
            return
        if begin is not None:
            TASK_SECONDS.labels(task.name).observe(time.perf_counter() - begin)
        outcome = {"SUCCESS": "succeeded", "RETRY": "retried"}.get(state, "failed")
        TASKS.labels(task.name, outcome).inc()

    @signals.worker_init.connect(weak=False)
    def _serve(sender=None, **_kw) -> None:
        consumed = getattr(getattr(app.amqp, "queues", None), "consume_from", None) or {}
        queues = [queue for queue in consumed if queue in QUEUES] or [service]
        port = settings.worker_metrics_port(queues[0])
        registry = CollectorRegistry()
        directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
        if directory:
            # Files of a previous run would be summed with this one's; no task ran yet.
            shutil.rmtree(directory, ignore_errors=True)
            Path(directory).mkdir(parents=True, exist_ok=True)
            MultiProcessCollector(registry)
        else:
            log.warning("PROMETHEUS_MULTIPROC_DIR is not set: task metrics of pool processes are not served")
        registry.register(QueueLength(settings.redis_url, queues))
        try:
            start_http_server(port, addr=settings.host, registry=registry)
        except OSError as exc:  # a second worker of one queue on one host: it still works, without metrics
            log.warning("worker metrics not served on %s:%d: %s", settings.host, port, exc)
