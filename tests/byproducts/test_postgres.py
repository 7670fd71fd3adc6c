"""The same ingest and queries against a real PostgreSQL server (the store of the Helm deployment)."""

from __future__ import annotations

import uuid

import pytest
from sqlalchemy import func, select

from annotation.v1 import byproducts_pb2 as pb
from services.byproducts.persist import persist
from services.byproducts.synthetic import session_events
from services.byproducts.tables import EventRow
from services.common.storage import make_engine, migrate
from tests.byproducts.conftest import bearer
from tests.conftest import wait_until

pytestmark = pytest.mark.integration


@pytest.fixture
def bp_settings(settings, postgres_url):
    """Overrides the SQLite settings of conftest: this module's server and worker use PostgreSQL."""
    migrate(postgres_url)
    return settings.model_copy(update={"celery_visibility_timeout_s": 2, "database_url": postgres_url})


def stored(engine, session_id: str) -> int:
    with engine.connect() as connection:
        return connection.scalar(select(func.count()).select_from(EventRow).where(EventRow.session_id == session_id))


def test_persist_is_idempotent_on_postgres(postgres_url):
    migrate(postgres_url)
    engine = make_engine(postgres_url)
    sid = f"pg-direct-{uuid.uuid4().hex[:8]}"
    events = session_events(sid, "p1", 3000)
    persist(engine, events[:2000], 0, 5000)
    persist(engine, events[1000:], 0, 5000)  # overlaps: a redelivered message plus new events
    persist(engine, events, 0, 5000)
    assert stored(engine, sid) == 3000
    engine.dispose()


def test_stream_replay_and_queries_on_postgres(stub, worker, keys, engine):
    sid = f"pg-{uuid.uuid4().hex[:8]}"
    events = session_events(sid, "p1", 3000, annotator_id=f"ann-{sid}")
    summary = stub.Record(iter(events), metadata=bearer(keys["admin"]), timeout=60)  # for ann-<sid>
    assert summary.accepted == 3000
    replay = stub.Record(iter(events[:1500]), metadata=bearer(keys["admin"]), timeout=60)
    assert (replay.accepted, replay.duplicates) == (0, 1500)
    wait_until(lambda: stored(engine, sid) == 3000, 60, "stored in PostgreSQL")
    meta = bearer(keys["reviewer"])
    found = wait_until(lambda: stub.ListSignals(pb.ListSignalsRequest(
        project_id="p1", filter=pb.SessionFilter(annotator_id=f"ann-{sid}")), metadata=meta, timeout=10).signals,
        30, "signals")
    assert found[0].session_id == sid and found[0].complete
    stats = stub.GetSession(pb.ByproductsGetSessionRequest(project_id="p1", session_id=sid), metadata=meta,
                            timeout=10).stats
    assert (stats.event_count, stats.last_seq, list(stats.missing)) == (3000, 3000, [])
    chunks = list(stub.ExportJsonl(pb.ExportJsonlRequest(project_id="p1", filter=pb.SessionFilter(session_id=sid)),
                                   metadata=meta, timeout=30))
    assert sum(c.line_count for c in chunks) == 3001
