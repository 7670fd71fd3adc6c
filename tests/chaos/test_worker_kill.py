"""kill -9 of each Celery worker type mid-task: the task comes back and its effect happens exactly once.

How the kill lands mid-task, every time: the test holds the SQLite store's write lock, so a task that
reached its first write waits there; the test sees the task delivered and running (kombu's ``unacked``
hash, and STARTED where the task keeps results), checks nothing of its effect is stored yet, and kills
the whole worker (main process and pool child) with SIGKILL. The lock is released, a new worker starts,
kombu restores the unacknowledged message after the visibility timeout (2 s here), and the effect is
stored once. The variant that kills only the pool child (the main process notices, and
``reject_on_worker_lost`` requeues) runs with ``-m chaos``, as do repeated kills.

Effects and what "once" means for each task:

- ``quality.annotation_submitted``: one ``quality_sessions`` row per session id (primary key) with its score;
- ``selection.score_pool``: each item's region scores, one row per (item, region key, segment);
- ``dialog.fit_models``: the cost and acceptance models of the project and of each annotator;
- ``byproducts.annotation_submitted``: the session's events, one row per event id.
"""

from __future__ import annotations

import gc
import os
import signal
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np
import pytest
from celery import Celery
from redis import Redis
from sqlalchemy import func, select

from services.byproducts.segmentation_summary import events_of
from services.byproducts.tables import EventRow
from services.common import annotation_events
from services.common.storage import make_engine, make_session_factory, migrate
from services.dialog.tables import ModelRow
from services.quality.tables import ScoredSessionRow
from services.selection.pool import Item, PoolStore
from services.selection.predictions import Prediction
from services.selection.tables import ScoreRow
from tests.chaos.conftest import children, sqlite_write_lock, unacked_task_ids
from tests.conftest import wait_until
from tests.quality.helpers import make_event, make_payload

pytestmark = pytest.mark.integration

TASKS = 3  # sent per scenario: one is killed mid-flight, the others wait behind it


@dataclass
class Scenario:
    service: str
    task: str
    args: Callable[[int], list]  # the i-th task's arguments
    effects: Callable[[object], tuple[int, int, int]]  # engine -> (expected, distinct present, rows)
    prepare: Callable[[object], None] = lambda engine: None
    keeps_result: bool = True


def _quality_effects(engine) -> tuple[int, int, int]:
    with engine.connect() as db:
        rows = db.execute(select(ScoredSessionRow.session_id)).scalars().all()
    return TASKS, len(set(rows) & {f"q{i}" for i in range(TASKS)}), len(rows)


SEL_ITEMS = 12


def _selection_prepare(engine) -> None:
    pools = PoolStore(make_session_factory(engine))
    rng = np.random.default_rng(0)
    for i in range(TASKS):
        pools.create_pool("p1", f"pool{i}", "", ["bg", "fg"])
        pools.register_items("p1", f"pool{i}", [Item(f"it{k}", width=48, height=32) for k in range(SEL_ITEMS)])
        predictions = []
        for k in range(SEL_ITEMS):
            logits = rng.normal(size=(2, 32, 48)) * 3
            probs = (np.exp(logits) / np.exp(logits).sum(axis=0)).astype(np.float32)
            predictions.append((f"it{k}", Prediction(probs)))
        pools.put_predictions("p1", f"pool{i}", predictions)


def _selection_effects(engine) -> tuple[int, int, int]:
    with engine.connect() as db:
        rows = db.execute(select(ScoreRow.pool_id, ScoreRow.item_id, ScoreRow.region_key, ScoreRow.segment)).all()
    items = {(pool, item) for pool, item, _, _ in rows}
    duplicates = len(rows) - len(set(rows))  # the same region scored twice
    return TASKS * SEL_ITEMS, len(items), len(items) + duplicates


def _dialog_effects(engine) -> tuple[int, int, int]:
    with engine.connect() as db:
        rows = db.execute(select(ModelRow.annotator_id, ModelRow.kind)).all()
    expected = {("", "cost"), ("", "acceptance")} | {(f"a{i}", k) for i in range(TASKS) for k in ("cost", "acceptance")}
    return len(expected), len(set(rows) & expected), len(rows)


SESSIONS = [make_event(f"bs{i}", clicks=3 + i) for i in range(TASKS)]
SUMMARY_EVENTS = {e.event_id for s in SESSIONS for e in events_of(s)}


def _byproducts_effects(engine) -> tuple[int, int, int]:
    with engine.connect() as db:
        rows, distinct = db.execute(select(func.count(), func.count(func.distinct(EventRow.event_id)))
                                    .select_from(EventRow)).one()
    return len(SUMMARY_EVENTS), distinct, rows


SCENARIOS = {
    "quality": Scenario("quality", "quality.annotation_submitted",
                        lambda i: [make_payload(f"q{i}", clicks=3 + i)], _quality_effects),
    "selection": Scenario("selection", "selection.score_pool",
                          lambda i: ["p1", f"pool{i}", [["patch", 16], ["image", 0]]], _selection_effects,
                          _selection_prepare),
    "dialog": Scenario("dialog", "dialog.fit_models", lambda i: ["p1", f"a{i}"], _dialog_effects),
    "byproducts-summary": Scenario("byproducts", "byproducts.annotation_submitted",
                                   lambda i: [annotation_events.encode(SESSIONS[i])], _byproducts_effects),
}


def run_kill(scenario: Scenario, settings, start_worker, chaos_report, name: str, target: str = "worker",
             kills: int = 1) -> None:
    url = settings.resolved_database_url
    migrate(url)
    engine = make_engine(url)
    scenario.prepare(engine)
    redis = Redis.from_url(settings.redis_url)
    celery = Celery(broker=settings.redis_url, backend=settings.redis_url)
    worker = start_worker(settings, scenario.service, "first")
    results, killed_at, mid_flight = [], None, []
    for round_ in range(kills):
        with sqlite_write_lock(settings):
            if round_ == 0:
                results = [celery.send_task(scenario.task, args=scenario.args(i), queue=scenario.service)
                           for i in range(TASKS)]
            ids = {r.id for r in results}

            def running():
                held = unacked_task_ids(redis) & ids
                if not held:
                    return None
                if scenario.keeps_result and not any(r.state == "STARTED" for r in results if r.id in held):
                    return None
                return held
            try:
                wait_until(running, 90, "a task running in the worker", interval_s=0.1)
            except TimeoutError:
                pytest.fail(f"no task ran:\n{worker.output()[-3000:]}")
            time.sleep(0.5)  # into its write, where the lock holds it
            mid_flight.append(scenario.effects(engine)[1])
            if target == "worker":
                worker.stop(signal.SIGKILL)  # the whole process group: no goodbye to the broker
            else:
                pool = children(worker.proc.pid)
                assert pool, "the prefork pool has a child"
                for pid in pool:
                    os.kill(pid, signal.SIGKILL)
            killed_at = killed_at or time.monotonic()
        if target == "worker":
            worker = start_worker(settings, scenario.service, f"after-kill-{round_}")
    expected = scenario.effects(engine)[0]
    try:
        wait_until(lambda: scenario.effects(engine)[1] == expected, 120, "every effect stored", interval_s=0.25)
    except TimeoutError:
        pass
    recovered_at = time.monotonic()
    time.sleep(settings.celery_visibility_timeout_s + 1.5)  # a late second delivery would show now
    expected, present, rows = scenario.effects(engine)
    states = [r.state for r in results] if scenario.keeps_result else []
    row = chaos_report.record(
        name, requests=TASKS, client_errors=sum(s == "FAILURE" for s in states), lost=expected - present,
        duplicates=rows - present, recovery_s=recovered_at - killed_at if present == expected else None,
        kills=kills, killed=target, effects_when_killed=mid_flight, effects_expected=expected)
    assert mid_flight[0] < expected, "the kill must land before the effect was stored"
    assert row["lost"] == 0, f"{row}\n{worker.output()[-3000:]}"
    assert row["duplicates"] == 0, row
    assert not unacked_task_ids(redis) & {r.id for r in results}, "nothing left unacknowledged"
    if scenario.keeps_result:
        wait_until(lambda: all(r.state == "SUCCESS" for r in results), 30, "every task SUCCESS")
    engine.dispose()
    results.clear()  # let the results unsubscribe now, while this test's Redis still runs
    gc.collect()
    celery.close()


@pytest.mark.parametrize("kind", list(SCENARIOS))
def test_kill_9_of_the_worker_mid_task_redelivers_and_stores_once(kind, chaos_settings, start_worker, chaos_report):
    run_kill(SCENARIOS[kind], chaos_settings, start_worker, chaos_report, f"kill-9-worker/{kind}")


@pytest.mark.chaos
@pytest.mark.parametrize("kind", list(SCENARIOS))
def test_kill_9_of_the_pool_child_mid_task_requeues_and_stores_once(kind, chaos_settings, start_worker,
                                                                    chaos_report):
    run_kill(SCENARIOS[kind], chaos_settings, start_worker, chaos_report, f"kill-9-child/{kind}", target="child")


@pytest.mark.chaos
@pytest.mark.parametrize("kind", list(SCENARIOS))
def test_repeated_kills_of_the_worker_mid_task_store_once(kind, chaos_settings, start_worker, chaos_report):
    run_kill(SCENARIOS[kind], chaos_settings, start_worker, chaos_report, f"kill-9-worker-x3/{kind}", kills=3)
