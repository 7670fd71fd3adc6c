"""Byproduct ingest throughput: end to end (client -> gRPC -> Celery queue -> worker -> store) against a
direct bulk insert into the same store, side by side in one run, with SQLite and with PostgreSQL.

End to end runs the real server and worker processes on a Redis with AOF; concurrent clients send
synthetic sessions (mostly 5-point mouse trajectories, clicks, corrections) as RecordBatch calls of
1000 events or as one Record stream each, and the clock stops when the last event is in the store. The queue depth (messages waiting)
is sampled throughout. The direct baseline calls the worker's own ``persist`` on the same events in
chunks of the same size, in-process. Absolute rates hold only for the machine they were measured on.

    python -m bench.byproducts_ingest --out bench/results
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import grpc
import typer
from redis import Redis
from sqlalchemy import func, select

from annotation.v1 import byproducts_pb2, byproducts_pb2_grpc
from services.byproducts.ingest import QUEUE
from services.byproducts.persist import persist
from services.byproducts.synthetic import session_events
from services.byproducts.tables import EventRow
from services.common.keys import KeyStore, Role
from services.common.probes import grpc_health
from services.common.storage import make_engine, make_session_factory, migrate
from services.simulation.stack import free_port

app = typer.Typer(add_completion=False)
REPO = Path(__file__).resolve().parents[1]


def _wait(predicate, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise TimeoutError(what)


class Postgres:
    """A throwaway PostgreSQL cluster (as the postgres user when run as root), or None if not installed."""

    def __init__(self, root: Path) -> None:
        found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
        self.bindir = Path(found[-1]).parent if found else None
        self.data, self.port = root / "pg", free_port()
        self.as_user = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        if self.bindir and os.geteuid() == 0:
            shutil.chown(root, "postgres")

    def start(self) -> str | None:
        if self.bindir is None:
            return None
        run = lambda *args: subprocess.run([*self.as_user, *args], check=True, stdout=subprocess.DEVNULL)  # noqa: E731
        run(str(self.bindir / "initdb"), "-D", str(self.data), "-U", "annot", "--auth=trust", "-E", "UTF8")
        run(str(self.bindir / "pg_ctl"), "-D", str(self.data), "-w", "-l", str(self.data / "log"), "-o",
            f"-p {self.port} -k {self.data} -c listen_addresses=127.0.0.1", "start")
        run(str(self.bindir / "createdb"), "-h", "127.0.0.1", "-p", str(self.port), "-U", "annot", "annotation")
        return f"postgresql+psycopg://annot@127.0.0.1:{self.port}/annotation"

    def stop(self) -> None:
        if self.bindir is not None and self.data.exists():
            subprocess.run([*self.as_user, str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m", "fast", "stop"],
                           check=False, stdout=subprocess.DEVNULL)


def _count(engine, prefix: str) -> int:
    with engine.connect() as connection:
        return connection.scalar(select(func.count()).select_from(EventRow).where(EventRow.session_id.like(f"{prefix}%")))


def _direct(url: str, sessions: list[list], chunk: int) -> dict:
    engine = make_engine(url)
    events = [e for session in sessions for e in session]
    start = time.perf_counter()
    for first in range(0, len(events), chunk):
        persist(engine, events[first:first + chunk], 0, 5000)
    seconds = time.perf_counter() - start
    engine.dispose()
    return {"events": len(events), "seconds": seconds, "events_per_s": len(events) / seconds}


def _send(stub, mode: str, events: list, metadata) -> int:
    """One client: a Record stream of the session, or RecordBatch calls of 1000 events; returns accepted."""
    if mode == "stream":
        return stub.Record(iter(events), metadata=metadata, timeout=600).accepted
    accepted = 0
    for first in range(0, len(events), 1000):
        batch = byproducts_pb2.EventBatch(project_id="bench", events=events[first:first + 1000])
        accepted += stub.RecordBatch(batch, metadata=metadata, timeout=600).accepted
    return accepted


def _end_to_end(env: dict, url: str, address: str, token: str, sessions: list[list], redis: Redis,
                prefix: str, workdir: Path, concurrency: int, mode: str) -> dict:
    logs = [(workdir / f"{prefix}-{name}.log").open("wb") for name in ("server", "worker")]
    procs = [
        subprocess.Popen([sys.executable, "-m", "services.byproducts.server"], cwd=REPO, env=env, stdout=logs[0],
                         stderr=subprocess.STDOUT, start_new_session=True),
        subprocess.Popen([sys.executable, "-m", "celery", "-A", "services.byproducts.worker:app", "worker", "-Q",
                          QUEUE, "-n", f"bench-{prefix}@%h", "--concurrency", str(concurrency), "--without-gossip",
                          "--without-mingle", "--without-heartbeat", "-l", "WARNING"], cwd=REPO, env=env,
                         stdout=logs[1], stderr=subprocess.STDOUT, start_new_session=True)]
    engine = make_engine(url)
    total = sum(len(s) for s in sessions)
    depths: list[int] = []
    try:
        _wait(lambda: grpc_health(address, 0.5) == "SERVING", 60, "server SERVING")
        time.sleep(2.0)  # let the worker connect
        done = threading.Event()

        def sample() -> None:
            while not done.is_set():
                depths.append(int(redis.llen(QUEUE)))
                time.sleep(0.05)

        sampler = threading.Thread(target=sample, daemon=True)
        metadata = [("authorization", f"Bearer {token}")]
        summaries = []
        with grpc.insecure_channel(address) as channel:
            stub = byproducts_pb2_grpc.ByproductsStub(channel)
            start = time.perf_counter()
            sampler.start()
            threads = [threading.Thread(target=lambda s=s: summaries.append(_send(stub, mode, s, metadata)))
                       for s in sessions]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            acknowledged = time.perf_counter() - start
            _wait(lambda: _count(engine, prefix) >= total, 600, "all stored")
            seconds = time.perf_counter() - start
            done.set()
        assert sum(summaries) == total, summaries
        assert _count(engine, prefix) == total
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait(30)
        for log in logs:
            log.close()
        engine.dispose()
    return {"events": total, "seconds": seconds, "events_per_s": total / seconds,
            "acknowledged_s": acknowledged, "acknowledged_events_per_s": total / acknowledged,
            "queue_depth_max": max(depths or [0]), "queue_depth_mean": sum(depths) / max(1, len(depths))}


@app.command()
def main(out: Path = Path("bench/results"), events: int = 100_000, sessions: int = 4,
         worker_concurrency: int = 2, postgres: bool = True,
         modes: list[str] = typer.Option(["batch", "stream"], help="batch: RecordBatch of 1000; stream: Record")) -> None:
    out.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix="annot-bench-bp-"))
    os.chmod(workdir, 0o755)
    redis_port = free_port()
    redis = subprocess.Popen([shutil.which("redis-server") or "redis-server", "--port", str(redis_port), "--bind",
                              "127.0.0.1", "--dir", str(workdir), "--appendonly", "yes", "--appendfsync",
                              "everysec", "--save", ""], stdout=subprocess.DEVNULL)
    pg = Postgres(workdir)
    rows = []
    try:
        _wait(lambda: Redis(port=redis_port).ping(), 10, "redis")
        client = Redis(port=redis_port)
        stores = {"sqlite": f"sqlite:///{workdir / 'annotation.db'}"}
        pg_url = pg.start() if postgres else None
        if pg_url:
            stores["postgresql"] = pg_url
        per_session = events // sessions
        for name, url in stores.items():
            migrate(url)
            _, token = KeyStore(make_session_factory(make_engine(url)), 0).create("bench", Role.ADMIN, ["*"])
            port = free_port()
            env = {**os.environ, "ANNOT_ENV": "test", "ANNOT_VAR_DIR": str(workdir / "var"),
                   "ANNOT_REDIS_URL": f"redis://127.0.0.1:{redis_port}/0", "ANNOT_DATABASE_URL": url,
                   "ANNOT_BYPRODUCTS_PORT": str(port), "ANNOT_METRICS_PORT_BASE": str(free_port() + 10),
                   "ANNOT_LOG_LEVEL": "WARNING"}
            direct_sessions = [session_events(f"direct-{n}", "bench", per_session, seed=n) for n in range(sessions)]
            direct = _direct(url, direct_sessions, 1000)
            for mode in modes:
                client.flushall()  # the ingest state of earlier runs
                e2e_sessions = [session_events(f"{mode}-{n}", "bench", per_session, seed=n) for n in range(sessions)]
                e2e = _end_to_end(env, url, f"127.0.0.1:{port}", token, e2e_sessions, client, mode, workdir,
                                  worker_concurrency, mode)
                rows.append({"store": name, "mode": mode, "events": per_session * sessions, "sessions": sessions,
                             "worker_concurrency": worker_concurrency, "direct": direct, "end_to_end": e2e,
                             "ratio_end_to_end_over_direct": e2e["events_per_s"] / direct["events_per_s"]})
                print(json.dumps(rows[-1]), flush=True)
    finally:
        pg.stop()
        redis.terminate()
        redis.wait()
        shutil.rmtree(workdir, ignore_errors=True)
    (out / "byproducts_ingest.json").write_text(json.dumps(rows, indent=2))
    lines = ["# Byproduct ingest: end to end vs direct bulk insert", "",
             f"{rows[0]['events'] if rows else 0} events, {sessions} concurrent clients (one session each), sent "
             "as RecordBatch calls of 1000 events (batch) or one Record stream each (stream); end to end = client -> "
             "gRPC -> Redis queue (AOF) -> worker -> store, until the last event is stored. Direct = the worker's "
             "bulk insert called in-process on chunks of 1000.", "",
             "| store | mode | direct events/s | end-to-end events/s | e2e/direct | acknowledged events/s | queue depth max "
             "(messages of <=1000 events) |", "| --- | --- | --- | --- | --- | --- | --- |"]
    lines += [f"| {r['store']} | {r['mode']} | {r['direct']['events_per_s']:,.0f} | {r['end_to_end']['events_per_s']:,.0f} | "
              f"{r['ratio_end_to_end_over_direct']:.2f} | {r['end_to_end']['acknowledged_events_per_s']:,.0f} | "
              f"{r['end_to_end']['queue_depth_max']} |" for r in rows]
    (out / "byproducts_ingest.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    app()
