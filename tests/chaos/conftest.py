"""Fixtures of the fault-injection suite: real Celery workers of every service, a restartable PostgreSQL
cluster, a write lock on the SQLite store (to hold a task mid-flight), and the report every scenario
writes its figures into (``var/artifacts/chaos/report.json`` and ``report.md``, not committed).

Long variants carry ``@pytest.mark.chaos``; they run only when ``-m`` names the marker
(``python -m pytest -m chaos tests/chaos``); a plain ``pytest`` runs the bounded ones.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sqlite3
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from redis import Redis

from services.common.settings import Settings
from tests.conftest import PYTHON, REPO, _postgres_bin, free_port, start_service

REPORT_DIR = REPO / "var" / "artifacts" / "chaos"


def pytest_configure(config) -> None:
    config.addinivalue_line("markers", "chaos: long fault-injection variants (run with -m chaos)")


def pytest_collection_modifyitems(config, items) -> None:
    if "chaos" in (config.option.markexpr or ""):
        return
    skip = pytest.mark.skip(reason="long chaos variant: run with `-m chaos`")
    for item in items:
        if item.get_closest_marker("chaos") is not None:
            item.add_marker(skip)


# -- the report ---------------------------------------------------------------------------------------
class Report:
    """Per scenario: requests, client errors, lost, duplicated, recovery time; merged into one file."""

    def __init__(self) -> None:
        self.rows: dict[str, dict] = {}

    def record(self, scenario: str, *, requests: int, client_errors: int, lost: int, duplicates: int,
               recovery_s: float | None, **extra) -> dict:
        row = {"requests": requests, "client_errors": client_errors, "lost": lost, "duplicates": duplicates,
               "recovery_s": None if recovery_s is None else round(recovery_s, 2), **extra,
               "load_average": os.getloadavg()[0], "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        self.rows[scenario] = row
        return row

    def write(self) -> None:
        if not self.rows:
            return
        REPORT_DIR.mkdir(parents=True, exist_ok=True)
        path = REPORT_DIR / "report.json"
        try:
            merged = json.loads(path.read_text()) if path.exists() else {}
        except ValueError:
            merged = {}
        merged.update(self.rows)
        path.write_text(json.dumps(merged, indent=2, sort_keys=True))
        lines = ["# Fault injection report", "",
                 "| scenario | requests | client errors | lost | duplicates | recovery s | load avg | notes |",
                 "| --- | --- | --- | --- | --- | --- | --- | --- |"]
        for name, row in sorted(merged.items()):
            notes = ", ".join(f"{k}={v}" for k, v in row.items() if k not in {
                "requests", "client_errors", "lost", "duplicates", "recovery_s", "load_average", "at"})
            lines.append(f"| {name} | {row['requests']} | {row['client_errors']} | {row['lost']} | "
                         f"{row['duplicates']} | {row['recovery_s']} | {row['load_average']:.1f} | {notes} |")
        (REPORT_DIR / "report.md").write_text("\n".join(lines) + "\n")


@pytest.fixture(scope="session")
def chaos_report() -> Iterator[Report]:
    report = Report()
    yield report
    report.write()


# -- settings and workers -----------------------------------------------------------------------------
@pytest.fixture
def chaos_settings(settings: Settings, monkeypatch) -> Settings:
    """A 2 s visibility timeout on every queue: a killed worker's task comes back within seconds."""
    monkeypatch.setenv("ANNOT_BYPRODUCTS_REDELIVER_AFTER_S", "4")
    return settings.model_copy(update={"celery_visibility_timeout_s": 2,
                                       "celery_visibility_timeout_by_queue": {}})


@pytest.fixture
def start_worker(spawn):
    def start(settings: Settings, service: str, name: str = "w1", concurrency: int = 1):
        return spawn([PYTHON, "-m", "celery", "-A", f"services.{service}.worker:app", "worker", "-Q", service,
                      "-n", f"{name}@%h", "--concurrency", str(concurrency), "--without-gossip",
                      "--without-mingle", "--without-heartbeat", "-l", "WARNING"], settings)
    return start


def children(pid: int) -> list[int]:
    """Direct children of ``pid`` (the prefork pool's processes of a Celery worker)."""
    found = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        with contextlib.suppress(OSError):
            found += [int(p) for p in (task / "children").read_text().split()]
    return found


def unacked_task_ids(redis: Redis) -> set[str]:
    """Ids of the tasks kombu holds as delivered but not acknowledged (running, or prefetched)."""
    ids = set()
    for raw in redis.hvals("unacked"):
        with contextlib.suppress(ValueError, KeyError, IndexError, TypeError):
            ids.add(json.loads(raw)[0]["headers"]["id"])
    return ids


@contextlib.contextmanager
def sqlite_write_lock(settings: Settings) -> Iterator[sqlite3.Connection]:
    """Holds the SQLite store's write lock: a task reaching its first write waits there (up to the
    engine's 30 s busy timeout), which pins it mid-flight for a kill -9. Released on exit."""
    path = settings.resolved_database_url.split("///", 1)[1]
    connection = sqlite3.connect(path, timeout=30, isolation_level=None)
    connection.execute("PRAGMA journal_mode=WAL")  # as the services open it: readers never wait
    connection.execute("BEGIN IMMEDIATE")
    try:
        yield connection
    finally:
        with contextlib.suppress(sqlite3.Error):
            connection.execute("ROLLBACK")
        connection.close()


# -- PostgreSQL that a test may restart -----------------------------------------------------------------
class Postgres:
    def __init__(self) -> None:
        bindir = _postgres_bin()
        if bindir is None:
            pytest.fail("PostgreSQL missing: run `make system-deps` (make test does)")
        self.bindir = bindir
        self.root = Path(tempfile.mkdtemp(prefix="annot-chaos-pg-"))
        self.data = self.root / "data"
        self.port = free_port()
        self.as_user: list[str] = []
        if os.geteuid() == 0:
            shutil.chown(self.root, "postgres")
            self.as_user = ["runuser", "-u", "postgres", "--"]
        subprocess.run([*self.as_user, str(bindir / "initdb"), "-D", str(self.data), "-U", "annot",
                        "--auth=trust", "-E", "UTF8"], check=True, stdout=subprocess.DEVNULL)
        self.start()
        subprocess.run([*self.as_user, str(bindir / "createdb"), "-h", "127.0.0.1", "-p", str(self.port), "-U",
                        "annot", "annotation"], check=True)
        self.url = f"postgresql+psycopg://annot@127.0.0.1:{self.port}/annotation"

    def _ctl(self, *args: str) -> None:
        subprocess.run([*self.as_user, str(self.bindir / "pg_ctl"), "-D", str(self.data), *args],
                       check=True, stdout=subprocess.DEVNULL)

    def start(self) -> None:
        self._ctl("-w", "-l", str(self.data / "log"), "-o",
                  f"-p {self.port} -k {self.data} -c listen_addresses=127.0.0.1", "start")

    def stop(self, mode: str = "immediate") -> None:
        """``immediate``: no checkpoint, every connection cut (what a crash looks like to clients)."""
        self._ctl("-m", mode, "-w", "stop")

    def destroy(self) -> None:
        with contextlib.suppress(subprocess.CalledProcessError):
            self.stop("fast")
        shutil.rmtree(self.root, ignore_errors=True)


@pytest.fixture
def restartable_postgres() -> Iterator[Postgres]:
    server = Postgres()
    yield server
    server.destroy()



# -- servers and a retrying byproducts client -----------------------------------------------------------
@pytest.fixture
def start_server(spawn):
    def start(settings: Settings, service: str):
        return start_service(spawn, service, settings)
    return start


def annotator_key(settings: Settings, project: str = "p1") -> str:
    from services.common.keys import KeyStore, Role  # noqa: PLC0415
    from services.common.storage import make_engine, make_session_factory, migrate  # noqa: PLC0415

    migrate(settings.resolved_database_url)
    engine = make_engine(settings.resolved_database_url)
    try:
        return KeyStore(make_session_factory(engine), 0).create("chaos", Role.ANNOTATOR, [project])[1]
    finally:
        engine.dispose()


class BatchClient:
    """Sends byproduct batches with RecordBatch as a careful client does: an unacknowledged batch is
    retried unchanged until acknowledged. Counts requests, the errors it saw (by code) and samples of
    their messages."""

    RETRY = {"UNAVAILABLE", "DEADLINE_EXCEEDED", "RESOURCE_EXHAUSTED"}

    def __init__(self, stub, key: str, timeout_s: float = 5) -> None:
        self.stub, self.metadata, self.timeout_s = stub, [("authorization", f"Bearer {key}")], timeout_s
        self.requests = 0
        self.acknowledged = 0
        self.errors: dict[str, int] = {}
        self.messages: dict[str, str] = {}
        self.first_error_at: float | None = None
        self.last_error_at: float | None = None

    def send(self, events, stop_after_s: float = 300) -> None:
        import grpc  # noqa: PLC0415

        from annotation.v1 import byproducts_pb2 as pb  # noqa: PLC0415

        deadline = time.monotonic() + stop_after_s
        while True:
            self.requests += 1
            try:
                self.stub.RecordBatch(pb.EventBatch(project_id=events[0].project_id, events=events),
                                      metadata=self.metadata, timeout=self.timeout_s)
                self.acknowledged += 1
                return
            except grpc.RpcError as err:
                code = err.code().name
                self.errors[code] = self.errors.get(code, 0) + 1
                self.messages.setdefault(code, err.details())
                self.first_error_at = self.first_error_at or time.monotonic()
                self.last_error_at = time.monotonic()
                if code not in self.RETRY or time.monotonic() > deadline:
                    raise
                time.sleep(0.2)


def stored_counts(engine) -> tuple[int, int]:
    """(rows, distinct event ids) in the byproducts store."""
    from sqlalchemy import func, select  # noqa: PLC0415

    from services.byproducts.tables import EventRow  # noqa: PLC0415

    with engine.connect() as connection:
        return tuple(connection.execute(select(func.count(), func.count(func.distinct(EventRow.event_id)))
                                        .select_from(EventRow)).one())
