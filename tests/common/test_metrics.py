"""Metrics of the gateway and of a Celery worker, scraped from the real processes' metrics ports."""

from __future__ import annotations

import urllib.request

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from services.common.celery_app import make_celery
from services.common.storage import migrate
from tests.conftest import PYTHON, wait_until

pytestmark = pytest.mark.integration


def scrape(port: int) -> dict[tuple[str, tuple], float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as reply:
        text = reply.read().decode()
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(text) for sample in family.samples}


def sample(samples: dict, name: str, **labels) -> float | None:
    return samples.get((name, tuple(sorted(labels.items()))))


def test_a_prefork_worker_serves_what_its_pool_processes_counted(settings, spawn, tmp_path, monkeypatch):
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path / "prom"))
    (tmp_path / "prom").mkdir()
    (tmp_path / "prom" / "counter_1.db").write_bytes(b"stale run")  # wiped at start, never summed
    worker = spawn([PYTHON, "-m", "celery", "-A", "services.selection.worker:app", "worker", "-Q", "selection",
                    "-n", "metrics@%h", "--concurrency", "2", "--without-gossip", "--without-mingle"], settings)
    app = make_celery("selection", settings)
    results = [app.send_task("selection.probe", queue="selection") for _ in range(5)]
    pids = {result.get(timeout=60)["pid"] for result in results}
    assert worker.proc.pid not in pids  # the tasks ran in pool processes, not where the port is served
    port = settings.worker_metrics_port("selection")
    samples = wait_until(lambda: _counted(port, 5), 20, "five probes counted")
    assert sample(samples, "celery_tasks_total", task="selection.probe", outcome="failed") is None
    assert sample(samples, "celery_task_duration_seconds_count", task="selection.probe") == 5
    assert sample(samples, "celery_queue_length", queue="selection") == 0
    app.send_task("selection.not_a_task_yet", queue="selection")  # the worker drops it: unknown task
    app.send_task("selection.probe", queue="selection", countdown=3600)  # reserved, not waiting
    assert sample(scrape(port), "celery_queue_length", queue="selection") in (0, 1)


def _counted(port: int, n: int) -> dict | None:
    samples = _scraped(port)
    return samples if samples and sample(samples, "celery_tasks_total", task="selection.probe", outcome="succeeded") == n \
        else None


def test_the_gateway_counts_requests_by_route_template_on_its_own_port(settings, spawn):
    migrate(settings.resolved_database_url)
    gateway = spawn([PYTHON, "-m", "services.gateway"], settings)
    base = f"http://127.0.0.1:{settings.gateway_port}"
    try:
        wait_until(lambda: _up(f"{base}/healthz"), 30, "gateway up")
    except TimeoutError:
        pytest.fail(f"gateway did not start:\n{gateway.output()}")
    for session_id in ("a", "b", "c"):
        assert httpx.get(f"{base}/v1/projects/p1/sessions/{session_id}").status_code == 401
    assert httpx.get(f"{base}/no/such/{'x' * 40}").status_code == 404
    samples = scrape(settings.gateway_metrics_port)
    assert sample(samples, "http_requests_total", method="GET", route="/v1/projects/{project_id}/sessions/{session_id}",
                  status="401") == 3
    assert sample(samples, "http_requests_total", method="GET", route="unmatched", status="404") == 1
    assert not any("x" * 40 in str(labels) for _, labels in samples)
    assert httpx.get(f"{base}/metrics").status_code == 404  # not on the public port


def _up(url: str) -> bool:
    try:
        httpx.get(url, timeout=1)  # answers 503 without the services: listening is enough here
        return True
    except httpx.HTTPError:
        return False


def test_the_video_worker_serves_its_queue_on_its_own_port(settings, spawn, tmp_path, monkeypatch):
    """The video service's worker: metrics of its own queue on its own port, none of another queue."""
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path / "prom"))
    spawn([PYTHON, "-m", "celery", "-A", "services.video.worker:app", "worker", "-Q", "video",
           "-n", "video@%h", "--concurrency", "1", "--without-gossip", "--without-mingle"], settings)
    port = settings.worker_metrics_port("video")
    assert port != settings.worker_metrics_port("segmentation")
    samples = wait_until(lambda: _scraped(port), 30, "video worker metrics")
    assert sample(samples, "celery_queue_length", queue="video") == 0
    assert sample(samples, "celery_queue_length", queue="segmentation") is None


def _scraped(port: int) -> dict | None:
    try:
        return scrape(port)
    except OSError:
        return None
