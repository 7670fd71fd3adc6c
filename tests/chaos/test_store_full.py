"""The store's disk budget runs out mid-stream: the SQLite store lives on a small tmpfs that fills up.

The worker cannot write ("database or disk is full") and retries with backoff while the batches wait in
the outbox; the queue fills, and ingest refuses with RESOURCE_EXHAUSTED (retryable) instead of
accepting what it cannot keep. The database stays intact. When the operator grows the volume, every
acknowledged event is stored exactly once without restarting anything.
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from annotation.v1 import byproducts_pb2_grpc
from services.byproducts.synthetic import session_events
from services.common.settings import Settings
from services.common.storage import make_engine
from tests.chaos.conftest import BatchClient, annotator_key, stored_counts
from tests.conftest import wait_until

pytestmark = pytest.mark.integration


@pytest.fixture
def small_volume(tmp_path: Path) -> Iterator[Path]:
    """A 3 MiB tmpfs; ``resize`` grows it as an operator would grow a volume."""
    if os.geteuid() != 0:
        pytest.skip("mounting a size-limited tmpfs needs root (make test runs as root in CI)")
    mount = tmp_path / "store"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(mount)], check=True)
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)  # lazy: the spawned processes may still hold it


def integrity(path: Path) -> str:
    with sqlite3.connect(path) as connection:
        return connection.execute("PRAGMA integrity_check").fetchone()[0]


def test_a_full_store_refuses_ingest_then_stores_everything_once_when_it_grows(
        chaos_settings: Settings, small_volume, start_server, start_worker, chaos_report, monkeypatch):
    monkeypatch.setenv("ANNOT_BYPRODUCTS_MAX_QUEUE_MESSAGES", "4")
    monkeypatch.setenv("ANNOT_BYPRODUCTS_BACKPRESSURE_WAIT_S", "0.5")
    database = small_volume / "annotation.db"
    settings = chaos_settings.model_copy(update={"database_url": f"sqlite:///{database}"})
    key = annotator_key(settings)
    start_server(settings, "byproducts")
    worker = start_worker(settings, "byproducts")
    engine = make_engine(settings.resolved_database_url)
    # ~40k events: about four times what fits in the 3 MiB volume
    batches = [session_events(f"s-full-{n}", "p1", 1000, seed=100 + n) for n in range(40)]
    total = sum(len(batch) for batch in batches)

    with grpc.insecure_channel(settings.service_address("byproducts")) as channel:
        client = BatchClient(byproducts_pb2_grpc.ByproductsStub(channel), key)
        sender = threading.Thread(target=lambda: [client.send(batch, stop_after_s=240) for batch in batches],
                                  daemon=True)
        sender.start()
        wait_until(lambda: client.errors.get("RESOURCE_EXHAUSTED"), 120, "ingest refusing while the store is full")
        # the refusal reaches the client as soon as the worker fails; its log line may follow a moment later
        wait_until(lambda: "database or disk is full" in worker.output(), 30, "the worker logging the full store")
        full_at = stored_counts(engine)[0]
        assert 0 < full_at < total
        assert integrity(database) == "ok"
        time.sleep(2)
        assert stored_counts(engine)[0] == full_at  # nothing more fits, nothing half-written

        subprocess.run(["mount", "-o", "remount,size=64m", str(small_volume)], check=True)
        grown = time.monotonic()
        wait_until(lambda: stored_counts(engine)[0] > full_at, 120, "the store growing again")
        recovery_s = time.monotonic() - grown
        sender.join(240)
        assert not sender.is_alive() and client.acknowledged == len(batches)
        try:
            wait_until(lambda: stored_counts(engine)[0] == total, 180, "every event stored", interval_s=0.5)
        except TimeoutError:
            pytest.fail(f"stored {stored_counts(engine)} of {total}; worker log:\n{worker.output()[-3000:]}")
    rows, distinct = stored_counts(engine)
    engine.dispose()
    assert integrity(database) == "ok"
    refused = client.errors.get("RESOURCE_EXHAUSTED", 0)
    chaos_report.record("store disk full (3 MiB tmpfs, SQLite), then grown", requests=client.requests,
                        client_errors=sum(client.errors.values()), lost=total - distinct, duplicates=rows - distinct,
                        recovery_s=recovery_s, refused=refused, stored_when_full=full_at,
                        message=client.messages.get("RESOURCE_EXHAUSTED", "")[:80])
    assert (rows, distinct) == (total, total)
    assert set(client.errors) <= {"RESOURCE_EXHAUSTED"}
