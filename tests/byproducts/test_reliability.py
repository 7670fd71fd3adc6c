"""Exactly once under failures: the worker killed -9 mid-stream, a queue message lost, Redis killed -9 and
restarted mid-stream."""

from __future__ import annotations

import signal
import threading
import time

import grpc
import pytest
from redis import Redis
from sqlalchemy import func, select

from annotation.v1 import byproducts_pb2 as pb
from services.byproducts.outbox import BATCHES
from services.byproducts.synthetic import session_events
from services.byproducts.tables import EventRow
from tests.byproducts.conftest import bearer, key_id
from tests.conftest import wait_until

pytestmark = pytest.mark.integration


def counts(engine) -> tuple[int, int]:
    """(rows, distinct event ids) stored."""
    with engine.connect() as connection:
        return connection.execute(select(func.count(), func.count(func.distinct(EventRow.event_id)))
                                  .select_from(EventRow)).one()


def wait_all_stored(engine, events: list[pb.Event], timeout_s: float) -> None:
    try:
        wait_until(lambda: counts(engine)[0] == len(events), timeout_s, "every event stored", interval_s=0.5)
    except TimeoutError:
        pytest.fail(f"(rows, distinct ids) stored: {counts(engine)} of {len(events)} events after {timeout_s} s")


def check_exactly_once(engine, events: list[pb.Event]) -> None:
    with engine.connect() as connection:
        stored = dict(connection.execute(select(EventRow.event_id, EventRow.data)).all())
    assert len(stored) == len(events)
    for event in events[::97]:  # spot-check that what is stored is what was sent
        assert pb.Event.FromString(stored[event.event_id]) == event


def test_kill_9_of_the_worker_mid_stream_stores_every_acknowledged_event_once(
        bp_settings, stub, start_worker, keys, engine):
    me = key_id(keys["annotator"])  # the service records the key's own id as the annotator
    events = [e for n in range(4) for e in session_events(f"s-kill-{n}", "p1", 25_000, seed=n, annotator_id=me)]
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
    wait_all_stored(engine, events, 120)
    time.sleep(2.5)  # past the visibility timeout: a late redelivery would have to store nothing
    assert counts(engine) == (len(events), len(events))
    check_exactly_once(engine, events)


def test_a_queue_message_lost_with_its_worker_is_sent_again_from_the_outbox(
        bp_settings, stub, start_worker, keys, engine):
    """Kombu pops a message before it records it as unacknowledged: kill -9 in between loses it.

    The loss is made certain here by deleting the queue while no worker runs; the outbox still holds
    the batches and the server sends them again after REDELIVER_AFTER_S (4 s in these tests).
    """
    redis = Redis.from_url(bp_settings.redis_url)
    events = session_events("s-lost", "p1", 3000, seed=7, annotator_id=key_id(keys["annotator"]))
    for first in range(0, len(events), 1000):
        stub.RecordBatch(pb.EventBatch(project_id="p1", events=events[first:first + 1000]),
                         metadata=bearer(keys["annotator"]), timeout=10)
    assert redis.llen("byproducts") == 3 and redis.hlen(BATCHES) == 3
    redis.delete("byproducts")
    start_worker(bp_settings)
    wait_all_stored(engine, events, 60)
    wait_until(lambda: redis.hlen(BATCHES) == 0, 10, "the outbox emptied")
    assert counts(engine) == (len(events), len(events))
    check_exactly_once(engine, events)


def test_redis_killed_and_restarted_mid_stream_loses_nothing_acknowledged(
        bp_settings, redis_server, stub, worker, keys, engine):
    me = key_id(keys["annotator"])
    events = [e for n in range(2) for e in session_events(f"s-redis-{n}", "p1", 10_000, seed=10 + n, annotator_id=me)]
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
    wait_all_stored(engine, events, 120)
    assert counts(engine) == (len(events), len(events))
    check_exactly_once(engine, events)
