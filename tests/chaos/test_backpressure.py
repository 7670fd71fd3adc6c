"""Resource limits: Redis full (``maxmemory`` with ``noeviction``) and a consumer that stops (SIGSTOP of
the byproducts worker). Clients get a clear, retryable error (never a silent drop), the queue stays
bounded, and every batch that was acknowledged is stored exactly once when the limit lifts."""

from __future__ import annotations

import os
import signal
import threading
import time

import grpc
import pytest
from redis import Redis

from annotation.v1 import byproducts_pb2_grpc
from services.byproducts.outbox import BATCHES
from services.byproducts.synthetic import session_events
from services.common.storage import make_engine
from tests.chaos.conftest import BatchClient, annotator_key, stored_counts
from tests.conftest import wait_until

pytestmark = pytest.mark.integration


def test_redis_maxmemory_refuses_ingest_clearly_and_loses_nothing(chaos_settings, start_server, start_worker,
                                                                  chaos_report):
    """Redis at maxmemory refuses writes. Ingest answers RESOURCE_EXHAUSTED saying so. Celery workers do
    not survive it: kombu's restore sweep takes a lock with SET, gets OOM and the worker exits
    ("Unrecoverable error"); the test restarts it as supervisord / Kubernetes do and counts restarts."""
    key = annotator_key(chaos_settings)
    start_server(chaos_settings, "byproducts")
    workers = [start_worker(chaos_settings, "byproducts")]
    redis = Redis.from_url(chaos_settings.redis_url)
    engine = make_engine(chaos_settings.resolved_database_url)
    # sessions are sent until the limit has been hit and lifted; their ingest state (dedup index) stays
    # in Redis, and that is what fills the memory
    events: list = []
    lifted: list[float] = []
    stop = threading.Event()

    def operator() -> None:
        wait_until(lambda: stored_counts(engine)[0] > 0, 60, "the worker storing")
        redis.config_set("maxmemory-policy", "noeviction")
        redis.config_set("maxmemory", int(redis.info("memory")["used_memory"]) + 1024 * 1024)
        wait_until(lambda: client.errors, 120, "a refusal")
        time.sleep(3)  # refused for a while, then the operator raises the limit
        redis.config_set("maxmemory", 0)
        lifted.append(time.monotonic())

    def supervisor() -> None:  # what supervisord (autorestart) and Kubernetes do for a dead worker
        while not stop.is_set():
            if workers[-1].proc.poll() is not None:
                workers.append(start_worker(chaos_settings, "byproducts", f"restart-{len(workers)}"))
            time.sleep(0.5)

    with grpc.insecure_channel(chaos_settings.service_address("byproducts")) as channel:
        client = BatchClient(byproducts_pb2_grpc.ByproductsStub(channel), key)
        threads = [threading.Thread(target=operator, daemon=True), threading.Thread(target=supervisor, daemon=True)]
        for thread in threads:
            thread.start()
        for n in range(200):
            session = session_events(f"oom-{n}", "p1", 2000, seed=n)
            events += session
            for first in range(0, len(session), 500):
                client.send(session[first:first + 500])
            if lifted and n >= 3:
                break
        threads[0].join(120)
    assert lifted, "the limit must have been reached mid-stream"
    try:
        wait_until(lambda: stored_counts(engine)[0] >= len(events), 120, "every event stored", interval_s=0.25)
        wait_until(lambda: redis.hlen(BATCHES) == 0, 30, "the outbox emptied")
    except TimeoutError:
        pass
    stop.set()
    threads[1].join(5)
    stored_at = time.monotonic()
    rows, distinct = stored_counts(engine)
    row = chaos_report.record(
        "redis-maxmemory", requests=client.requests, client_errors=sum(client.errors.values()),
        lost=len(events) - distinct, duplicates=rows - distinct, recovery_s=stored_at - lifted[0],
        events=len(events), error_codes=client.errors, messages=client.messages,
        worker_restarts=len(workers) - 1, outbox_left=redis.hlen(BATCHES))
    engine.dispose()
    assert row["lost"] == 0 and row["duplicates"] == 0, f"{row}\n{workers[-1].output()[-3000:]}"
    assert set(client.errors) == {"RESOURCE_EXHAUSTED"}, row
    assert "out of memory" in client.messages["RESOURCE_EXHAUSTED"], row
    assert redis.hlen(BATCHES) == 0, row


def run_slow_consumer(settings, start_server, start_worker, chaos_report, monkeypatch, name: str,
                      clients: int, sessions: int, events_per_session: int, pause_s: float) -> None:
    limit = 5
    monkeypatch.setenv("ANNOT_BYPRODUCTS_MAX_QUEUE_MESSAGES", str(limit))
    monkeypatch.setenv("ANNOT_BYPRODUCTS_BACKPRESSURE_WAIT_S", "0.5")
    key = annotator_key(settings)
    start_server(settings, "byproducts")
    worker = start_worker(settings, "byproducts")
    redis = Redis.from_url(settings.redis_url)
    engine = make_engine(settings.resolved_database_url)
    per_client = [[e for n in range(sessions) for e in session_events(f"slow-{c}-{n}", "p1", events_per_session,
                                                                      seed=100 * c + n)] for c in range(clients)]
    total = sum(len(events) for events in per_client)
    depths: list[int] = []
    done = threading.Event()
    resumed: list[float] = []

    def sample() -> None:
        while not done.is_set():
            depths.append(int(redis.llen("byproducts")))
            time.sleep(0.02)

    def stall() -> None:  # the consumer stops dead, then comes back
        wait_until(lambda: stored_counts(engine)[0] > 0, 60, "the worker storing")
        os.killpg(worker.proc.pid, signal.SIGSTOP)
        time.sleep(pause_s)
        os.killpg(worker.proc.pid, signal.SIGCONT)
        resumed.append(time.monotonic())

    with grpc.insecure_channel(settings.service_address("byproducts")) as channel:
        stub = byproducts_pb2_grpc.ByproductsStub(channel)
        senders = [BatchClient(stub, key) for _ in range(clients)]

        def send(c: int) -> None:
            events = per_client[c]
            for i in range(0, len(events), 200):
                senders[c].send(events[i:i + 200])

        threads = [threading.Thread(target=sample, daemon=True), threading.Thread(target=stall, daemon=True)]
        threads += [threading.Thread(target=send, args=(c,)) for c in range(clients)]
        for thread in threads:
            thread.start()
        for thread in threads[2:]:
            thread.join(300)
        threads[1].join(60)
        done.set()
    try:
        wait_until(lambda: stored_counts(engine)[0] >= total, 120, "every event stored", interval_s=0.25)
    except TimeoutError:
        pass
    rows, distinct = stored_counts(engine)
    errors: dict[str, int] = {}
    messages: dict[str, str] = {}
    for sender in senders:
        for code, n in sender.errors.items():
            errors[code] = errors.get(code, 0) + n
        messages.update(sender.messages)
    last_refusal = max((s.last_error_at for s in senders if s.last_error_at), default=None)
    row = chaos_report.record(
        name, requests=sum(s.requests for s in senders), client_errors=sum(errors.values()), lost=total - distinct,
        duplicates=rows - distinct,
        recovery_s=max(0.0, last_refusal - resumed[0]) if resumed and last_refusal else None,
        events=total, queue_limit=limit, max_queue_depth=max(depths, default=0), clients=clients,
        pause_s=pause_s, error_codes=errors, messages=messages)
    engine.dispose()
    assert resumed, "the consumer must have stalled mid-stream"
    assert row["lost"] == 0 and row["duplicates"] == 0, row
    assert set(errors) <= {"RESOURCE_EXHAUSTED"}, row
    assert errors.get("RESOURCE_EXHAUSTED"), "a stalled consumer must push back on clients"
    assert "batches not stored yet" in messages["RESOURCE_EXHAUSTED"]
    # the check for room and the enqueue are two steps: each concurrent caller may add one message
    assert row["max_queue_depth"] <= limit + clients, row


def test_a_stalled_consumer_is_met_with_back_pressure_and_loses_nothing(chaos_settings, start_server, start_worker,
                                                                        chaos_report, monkeypatch):
    run_slow_consumer(chaos_settings, start_server, start_worker, chaos_report, monkeypatch, "slow-consumer",
                      clients=3, sessions=2, events_per_session=2000, pause_s=4)


@pytest.mark.chaos
def test_a_long_stalled_consumer_under_more_clients(chaos_settings, start_server, start_worker, chaos_report,
                                                    monkeypatch):
    run_slow_consumer(chaos_settings, start_server, start_worker, chaos_report, monkeypatch, "slow-consumer-long",
                      clients=8, sessions=3, events_per_session=5000, pause_s=20)
