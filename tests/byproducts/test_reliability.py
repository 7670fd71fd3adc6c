"""Exactly once under failures: the worker killed -9 mid-stream, Redis killed -9 and restarted mid-stream."""

from __future__ import annotations

import signal
import threading
import time

import grpc
import pytest
from sqlalchemy import func, select

from annotation.v1 import byproducts_pb2 as pb
from services.byproducts.synthetic import session_events
from services.byproducts.tables import EventRow
from tests.byproducts.conftest import bearer
from tests.conftest import wait_until

pytestmark = pytest.mark.integration


def counts(engine) -> tuple[int, int]:
    """(rows, distinct event ids) stored."""
    with engine.connect() as connection:
        return connection.execute(select(func.count(), func.count(func.distinct(EventRow.event_id)))
                                  .select_from(EventRow)).one()


def check_exactly_once(engine, events: list[pb.Event]) -> None:
    with engine.connect() as connection:
        stored = dict(connection.execute(select(EventRow.event_id, EventRow.data)).all())
    assert len(stored) == len(events)
    for event in events[::97]:  # spot-check that what is stored is what was sent
        assert pb.Event.FromString(stored[event.event_id]) == event


def test_kill_9_of_the_worker_mid_stream_stores_every_acknowledged_event_once(
        bp_settings, stub, start_worker, keys, engine):
    events = [e for n in range(4) for e in session_events(f"s-kill-{n}", "p1", 25_000, seed=n)]
    worker = start_worker(bp_settings, "first")
    results: dict = {}

    def stream():
        results["summary"] = stub.Record(iter(events), metadata=bearer(keys["annotator"]), timeout=240)

    sender = threading.Thread(target=stream)
    sender.start()
    wait_until(lambda: counts(engine)[0] >= 15_000, 120, "the worker storing", interval_s=0.05)
    worker.stop(signal.SIGKILL)  # kill -9 of the whole process group, mid-batch most likely
    killed_at = counts(engine)[0]
    time.sleep(1.0)  # the stream goes on while no worker runs: the queue fills
    start_worker(bp_settings, "second")
    sender.join(240)
    assert results["summary"].accepted == len(events)
    assert killed_at < len(events)
    wait_until(lambda: counts(engine)[0] == len(events), 120, "every event stored", interval_s=0.5)
    time.sleep(2.5)  # past the visibility timeout: a late redelivery would have to store nothing
    assert counts(engine) == (len(events), len(events))
    check_exactly_once(engine, events)


def test_redis_killed_and_restarted_mid_stream_loses_nothing_acknowledged(
        bp_settings, redis_server, stub, worker, keys, engine):
    events = [e for n in range(2) for e in session_events(f"s-redis-{n}", "p1", 10_000, seed=10 + n)]
    batches = [events[i:i + 500] for i in range(0, len(events), 500)]
    acknowledged: list[int] = []
    retries = 0
    restarted = threading.Event()

    def restart_redis():
        wait_until(lambda: len(acknowledged) >= len(batches) // 3, 60, "a third acknowledged")
        redis_server.proc.kill()  # SIGKILL: no shutdown, only what the AOF holds survives
        redis_server.proc.wait()
        time.sleep(1.5)  # the client keeps sending meanwhile: UNAVAILABLE, retried
        redis_server.start()
        restarted.set()

    outage = threading.Thread(target=restart_redis, daemon=True)
    outage.start()
    for index, batch in enumerate(batches):
        while True:  # a client retries an unacknowledged batch as it is
            try:
                stub.RecordBatch(pb.EventBatch(project_id="p1", events=batch), metadata=bearer(keys["annotator"]),
                                 timeout=5)
                acknowledged.append(index)
                break
            except grpc.RpcError as err:
                assert err.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED), err
                retries += 1
                time.sleep(0.2)
    outage.join(60)
    assert restarted.is_set() and retries > 0, "the outage must fall mid-stream"
    wait_until(lambda: counts(engine)[0] == len(events), 120, "every event stored", interval_s=0.5)
    assert counts(engine) == (len(events), len(events))
    check_exactly_once(engine, events)
