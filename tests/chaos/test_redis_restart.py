"""Redis (the broker, with AOF) killed -9 and restarted while Celery tasks wait on the queue and one is
in a worker's hands: the queued messages and the unacknowledged one survive in the AOF, the worker
reconnects by itself, and every task's effect is stored exactly once. (Byproduct ingest under the same
outage: tests/byproducts/test_reliability.py.)"""

from __future__ import annotations

import time

import pytest
from celery import Celery
from redis import Redis
from sqlalchemy import select

from services.common.storage import make_engine, migrate
from services.quality.tables import ScoredSessionRow
from tests.chaos.conftest import sqlite_write_lock, unacked_task_ids
from tests.conftest import wait_until
from tests.quality.helpers import make_payload

pytestmark = pytest.mark.integration


def scored(engine) -> list[str]:
    with engine.connect() as db:
        return list(db.execute(select(ScoredSessionRow.session_id)).scalars())


def run_restart(settings, redis_server, start_worker, chaos_report, name: str, tasks: int, outage_s: float) -> None:
    migrate(settings.resolved_database_url)
    engine = make_engine(settings.resolved_database_url)
    redis = Redis.from_url(settings.redis_url)
    celery = Celery(broker=settings.redis_url, backend=settings.redis_url)
    worker = start_worker(settings, "quality")
    ids = [f"r{i}" for i in range(tasks)]
    with sqlite_write_lock(settings):  # the first task waits at its write: in the worker's hands
        sent = [celery.send_task("quality.annotation_submitted", args=[make_payload(sid)], queue="quality").id
                for sid in ids]
        try:
            wait_until(lambda: unacked_task_ids(redis) & set(sent), 90, "a task in the worker's hands")
        except TimeoutError:
            pytest.fail(f"no task ran:\n{worker.output()[-3000:]}")
        waiting = int(redis.llen("quality"))
        redis_server.proc.kill()  # SIGKILL: only what the AOF holds survives
        redis_server.proc.wait()
        killed_at = time.monotonic()
        time.sleep(outage_s)
        redis_server.start()
        restarted_at = time.monotonic()
    try:
        wait_until(lambda: set(scored(engine)) >= set(ids), 120, "every session scored", interval_s=0.25)
    except TimeoutError:
        pass
    recovered_at = time.monotonic()
    time.sleep(settings.celery_visibility_timeout_s + 1.5)  # a late second delivery would show now
    rows = scored(engine)
    row = chaos_report.record(
        name, requests=tasks, client_errors=0, lost=len(set(ids) - set(rows)), duplicates=len(rows) - len(set(rows)),
        recovery_s=recovered_at - restarted_at if set(rows) >= set(ids) else None,
        queued_when_killed=waiting, outage_s=round(restarted_at - killed_at, 1),
        worker_alive=worker.proc.poll() is None)
    engine.dispose()
    assert waiting > 0, "tasks must have been waiting on the queue when Redis died"
    assert row["lost"] == 0 and row["duplicates"] == 0, f"{row}\n{worker.output()[-3000:]}"
    assert worker.proc.poll() is None, "the worker reconnects by itself"


def test_redis_killed_with_tasks_queued_and_in_flight_loses_none(chaos_settings, redis_server, start_worker,
                                                                 chaos_report):
    run_restart(chaos_settings, redis_server, start_worker, chaos_report, "redis-kill-9/quality", tasks=5,
                outage_s=2)


@pytest.mark.chaos
def test_redis_killed_for_longer_with_more_tasks(chaos_settings, redis_server, start_worker, chaos_report):
    run_restart(chaos_settings, redis_server, start_worker, chaos_report, "redis-kill-9-long/quality", tasks=40,
                outage_s=15)
