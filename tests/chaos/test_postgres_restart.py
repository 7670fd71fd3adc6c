"""PostgreSQL stopped hard (``pg_ctl -m immediate``: every connection cut, no checkpoint) and started again
while annotators stream byproducts: ingest only needs Redis, so clients keep being acknowledged (API keys
are cached for ``ANNOT_AUTH_CACHE_TTL_S``); the worker's inserts fail, are retried with backoff, and
every acknowledged event is stored exactly once after PostgreSQL is back."""

from __future__ import annotations

import threading
import time

import grpc
import pytest

from annotation.v1 import byproducts_pb2_grpc
from services.byproducts.synthetic import session_events
from services.common.storage import make_engine, migrate
from tests.chaos.conftest import BatchClient, annotator_key, stored_counts
from tests.conftest import wait_until

pytestmark = pytest.mark.integration


def run_restart(settings, pg, start_server, start_worker, chaos_report, name: str, sessions: int,
                events_per_session: int, outage_s: float, restarts: int = 1) -> None:
    migrate(pg.url)
    settings = settings.model_copy(update={"database_url": pg.url, "auth_cache_ttl_s": 30})  # the default
    key = annotator_key(settings)
    start_server(settings, "byproducts")
    start_worker(settings, "byproducts")
    engine = make_engine(pg.url)
    events = [e for n in range(sessions) for e in session_events(f"pg-{n}", "p1", events_per_session, seed=n)]
    batches = [events[i:i + 250] for i in range(0, len(events), 250)]
    outages: list[tuple[float, float]] = []
    grown_after: list[float] = []

    def outage() -> None:
        for k in range(restarts):
            wait_until(lambda: stored_counts(engine)[0] >= len(events) * (k + 1) // (restarts + 2), 120,
                       "the worker storing")
            pg.stop("immediate")
            down = time.monotonic()
            time.sleep(outage_s)  # clients keep sending meanwhile
            pg.start()
            outages.append((down, time.monotonic()))
            before = _safe_count(engine)
            wait_until(lambda: _safe_count(engine) > before, 120, "the store growing again", interval_s=0.1)
            grown_after.append(time.monotonic() - outages[-1][1])

    with grpc.insecure_channel(settings.service_address("byproducts")) as channel:
        client = BatchClient(byproducts_pb2_grpc.ByproductsStub(channel), key)
        chaos = threading.Thread(target=outage, daemon=True)
        chaos.start()
        for batch in batches:
            client.send(batch)
        chaos.join(240)
    assert len(outages) == restarts, "every outage must fall mid-traffic"
    try:
        wait_until(lambda: _safe_count(engine) == len(events), 180, "every event stored", interval_s=0.5)
    except TimeoutError:
        pass
    rows, distinct = stored_counts(engine)
    row = chaos_report.record(
        name, requests=client.requests, client_errors=sum(client.errors.values()), lost=len(events) - distinct,
        duplicates=rows - distinct, recovery_s=max(grown_after) if grown_after else None,
        events=len(events), acknowledged_batches=client.acknowledged, outage_s=outage_s, restarts=restarts,
        error_codes=client.errors)
    engine.dispose()
    assert client.acknowledged == len(batches)
    assert row["lost"] == 0 and row["duplicates"] == 0, row


def _safe_count(engine) -> int:
    try:
        return stored_counts(engine)[0]
    except Exception:  # noqa: BLE001 - PostgreSQL restarting
        return -1


def test_postgres_restart_mid_traffic_loses_nothing(chaos_settings, restartable_postgres, start_server,
                                                    start_worker, chaos_report):
    run_restart(chaos_settings, restartable_postgres, start_server, start_worker, chaos_report,
                "postgres-restart", sessions=2, events_per_session=5000, outage_s=3)


@pytest.mark.chaos
def test_postgres_restarted_three_times_with_longer_outages(chaos_settings, restartable_postgres, start_server,
                                                            start_worker, chaos_report):
    run_restart(chaos_settings, restartable_postgres, start_server, start_worker, chaos_report,
                "postgres-restart-x3", sessions=4, events_per_session=10_000, outage_s=10, restarts=3)
