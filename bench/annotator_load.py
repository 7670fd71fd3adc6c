"""Load test with human-like annotators: N simulated annotators (services/simulation/annotator.py: its
clicks, undos and Fitts'-law timing, slept in real time) click through interactive segmentation sessions
over **gRPC** (the segmentation service, as external tools and the gateway call it), while each streams
its byproducts (``RecordBatch`` after every action) and finished sessions flow through the Celery queues
to the byproducts and quality workers. N is ramped (default 10, 25, 50, 100, 200, one step each);
per step: click latency p50/p95/p99, error rate, queue depths and process memory (RSS).

The breaking point is the first step where the error rate exceeds ``--max-error-rate`` or the click
p95 exceeds ``--max-p95-ms``. Nothing may be lost: at the end every acknowledged byproduct event must
be stored exactly once and every submitted session scored by quality.

Everything runs on loopback in a private stack (redis, the real tritonserver on CPU, the segmentation
and byproducts servers, a byproducts and a quality worker). Figures hold only for the machine and the
load they were measured at; the load average is recorded beside each step.

    python -m bench.annotator_load --out bench/results            # the ramp (about 6 min)
    python -m bench.annotator_load --quick --out bench/results    # bounded smoke run (about 1 min)
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import threading
import time
from collections import defaultdict
from pathlib import Path

import grpc
import numpy as np
import typer
from PIL import Image
from redis import Redis
from sqlalchemy import func, select
from tqdm import tqdm

from annotation.v1 import (
    byproducts_pb2,
    byproducts_pb2_grpc,
    common_pb2,
    segmentation_pb2,
    segmentation_pb2_grpc,
)
from services.byproducts.synthetic import session_events
from services.byproducts.tables import EventRow
from services.common.masks import decode_rle
from services.common.settings import REPO_ROOT, served_model_dir
from services.common.storage import make_engine
from services.models import click_repository
from services.quality.tables import ScoredSessionRow
from services.simulation.annotator import SimulatedAnnotator, sample_profile
from services.simulation.stack import LocalStack, _wait

app = typer.Typer(add_completion=False)
PROJECT = "load"
QUEUES = ("segmentation", "byproducts", "quality")
EVENTS_PER_ACTION = 30  # pointer samples, the click and its mask change: what the web annotator sends


def _images(count: int, seed: int = 0) -> list[tuple[bytes, np.ndarray]]:
    """Synthetic photos (noisy gradient, one ellipse of another colour) with the object's mask."""
    rng = np.random.default_rng(seed)
    out = []
    h, w = 192, 256
    yy, xx = np.mgrid[:h, :w]
    for _ in range(count):
        base = rng.integers(40, 200, 3)
        image = (base + 30 * np.sin(xx / rng.uniform(20, 60))[..., None] + rng.normal(0, 12, (h, w, 3)))
        cy, cx = rng.uniform(0.3, 0.7) * h, rng.uniform(0.3, 0.7) * w
        ry, rx = rng.uniform(0.15, 0.3) * h, rng.uniform(0.15, 0.3) * w
        mask = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 < 1
        image[mask] = rng.integers(0, 255, 3) + rng.normal(0, 12, (int(mask.sum()), 3))
        buffer = io.BytesIO()
        Image.fromarray(np.clip(image, 0, 255).astype(np.uint8)).save(buffer, format="PNG")
        out.append((buffer.getvalue(), mask.astype(np.uint8) * 255))
    return out


class Stats:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.clicks: list[tuple[float, float, int]] = []  # (when, ms, step)
        self.requests = defaultdict(int)  # step -> calls made
        self.errors = defaultdict(lambda: defaultdict(int))  # step -> code -> n
        self.messages: dict[str, str] = {}
        self.acked_events: dict[str, int] = {}  # session -> byproduct events acknowledged
        self.submitted: set[str] = set()  # submitted with at least one click: quality must score these
        self.abandoned = 0  # cut off (end of a step, an error) before any click held: nothing to score
        self.unacked_batches = 0

    def error(self, step: int, err: grpc.RpcError) -> None:
        with self.lock:
            self.errors[step][err.code().name] += 1
            self.messages.setdefault(err.code().name, (err.details() or "")[:200])


class Annotator(threading.Thread):
    """One person: sessions one after another until told to stop; byproducts sent after each action."""

    def __init__(self, index: int, stubs, metadata, images, stats: Stats, stop: threading.Event,
                 step: int, speedup: float, timeout_s: float) -> None:
        super().__init__(daemon=True)
        self.index, self.seg, self.bp = index, stubs[0], stubs[1]
        self.metadata, self.images, self.stats, self.stop = metadata, images, stats, stop
        self.step, self.speedup, self.timeout_s = step, speedup, timeout_s
        self.rng = np.random.default_rng(1000 * step + index)

    def call(self, method, request, timeout: float | None = None):
        with self.stats.lock:
            self.stats.requests[self.step] += 1
        return method(request, metadata=self.metadata, timeout=timeout or self.timeout_s)

    def send_events(self, sid: str, events) -> None:
        """An unacknowledged batch is retried unchanged (at most 5 times) as the web annotator does."""
        for attempt in range(5):
            try:
                self.call(self.bp.RecordBatch, byproducts_pb2.EventBatch(project_id=PROJECT, events=events), 10)
                with self.stats.lock:
                    self.stats.acked_events[sid] = self.stats.acked_events.get(sid, 0) + len(events)
                return
            except grpc.RpcError as err:
                self.stats.error(self.step, err)
                time.sleep(0.2 * (attempt + 1))
        with self.stats.lock:
            self.stats.unacked_batches += 1

    def run(self) -> None:
        while not self.stop.is_set():
            data, annotation = self.images[int(self.rng.integers(len(self.images)))]
            try:
                self.session(data, annotation)
            except grpc.RpcError as err:
                self.stats.error(self.step, err)
                self.stop.wait(1.0)

    def session(self, data: bytes, annotation: np.ndarray) -> None:
        person = SimulatedAnnotator(annotation, sample_profile(self.rng), self.rng)
        sid = self.call(self.seg.StartSession, segmentation_pb2.StartSessionRequest(
            project_id=PROJECT, image_data=data, annotator_id=f"ann-{self.index}")).session.session_id
        events = session_events(sid, PROJECT, EVENTS_PER_ACTION * (person.profile.max_clicks + 2),
                                seed=int(self.rng.integers(1 << 30)), annotator_id=f"ann-{self.index}")
        sent, mask, shown_ms, held = 0, None, 0, 0  # held: clicks the session holds (undo takes one back)
        while not self.stop.is_set():
            action = person.next_action(mask)
            if action is None:
                break
            self.stop.wait(max(0.0, action.t_ms - shown_ms) / 1000 / self.speedup)  # the human's time
            start = time.perf_counter()
            try:
                if action.kind == "undo":
                    update = self.call(self.seg.Undo, segmentation_pb2.UndoRequest(project_id=PROJECT,
                                                                                   session_id=sid)).update
                    held -= 1
                else:
                    c = action.click
                    update = self.call(self.seg.AddClick, segmentation_pb2.AddClickRequest(
                        project_id=PROJECT, session_id=sid,
                        click=common_pb2.Click(x=c.x, y=c.y, positive=c.positive, t_ms=action.t_ms))).update
                    held += 1
                    with self.stats.lock:
                        self.stats.clicks.append((time.time(), (time.perf_counter() - start) * 1000, self.step))
            except grpc.RpcError as err:
                self.stats.error(self.step, err)
                break  # the person gives up on this object; the session is still finished below
            mask = decode_rle(update.mask.size, update.mask.counts, annotation.shape, "mask")
            shown_ms = action.t_ms
            chunk = events[sent:sent + EVENTS_PER_ACTION]
            sent += len(chunk)
            self.send_events(sid, chunk)
        if sent < len(events):
            self.send_events(sid, events[sent:])  # the rest, ending with submit
        # a session with no click held is abandoned (quality scores only submitted sessions with clicks)
        outcome = common_pb2.SESSION_OUTCOME_SUBMITTED if held > 0 else common_pb2.SESSION_OUTCOME_ABANDONED
        try:
            self.call(self.seg.FinishSession, segmentation_pb2.FinishSessionRequest(
                project_id=PROJECT, session_id=sid, outcome=outcome))
            with self.stats.lock:
                if held > 0:
                    self.stats.submitted.add(sid)
                else:
                    self.stats.abandoned += 1
        except grpc.RpcError as err:
            self.stats.error(self.step, err)


def _group_rss_mb(pgids: dict[str, int]) -> dict[str, float]:
    """Resident memory of each named process group (a Celery worker with its pool, tritonserver and its
    Python stubs), from /proc."""
    totals = {name: 0 for name in pgids}
    by_pgid = {pgid: name for name, pgid in pgids.items()}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            name = by_pgid.get(int(fields[2]))
            if name:
                totals[name] += int(fields[21]) * os.sysconf("SC_PAGE_SIZE")
        except (OSError, IndexError, ValueError):
            continue
    totals["bench client"] = _self_rss()
    return {k: round(v / 2**20, 1) for k, v in totals.items()}


def _self_rss() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def _pct(values, q) -> float:
    return round(float(np.percentile(values, q)), 1) if len(values) else 0.0


def served_refinement(settings) -> str:
    """What refines the served network's map: a pipeline model's own ``refine`` parameter (in Triton), or for a
    network-only model the service's GrabCut (``segmentation_refine``)."""
    params = click_repository.parameters((served_model_dir(settings.triton_model_name) / "config.pbtxt").read_text())
    refine = click_repository.pipeline_refinement(params)
    if refine is not None:
        return f"{refine} (in Triton)"
    return "grabcut (in the segmentation service)" if settings.segmentation_refine else "none"


def _plot(samples: list[dict], steps: list[dict], path: Path) -> None:
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    t0 = samples[0]["t"]
    t = [s["t"] - t0 for s in samples]
    fig, axes = plt.subplots(4, 1, figsize=(10, 12), sharex=True)
    axes[0].plot(t, [s["p95_ms"] for s in samples], label="click p95 (last 10 s)")
    axes[0].plot(t, [s["p50_ms"] for s in samples], label="click p50 (last 10 s)")
    axes[0].set_ylabel("ms")
    axes[0].set_yscale("log")
    axes[0].legend(loc="upper left")
    axes[1].plot(t, [s["annotators"] for s in samples], color="k", label="annotators")
    axes[1].plot(t, [s["errors_per_s"] for s in samples], color="r", label="errors/s")
    axes[1].legend(loc="upper left")
    for queue in QUEUES:
        axes[2].plot(t, [s["queues"][queue] for s in samples], label=f"queue {queue}")
    axes[2].set_ylabel("messages")
    axes[2].legend(loc="upper left")
    for name in samples[0]["rss_mb"]:
        axes[3].plot(t, [s["rss_mb"][name] for s in samples], label=name)
    axes[3].set_ylabel("RSS MiB")
    axes[3].set_xlabel("seconds")
    axes[3].legend(loc="upper left", fontsize=7)
    for ax in axes:
        for step in steps:
            ax.axvline(step["started"] - t0, color="grey", lw=0.5, ls=":")
    axes[0].set_title("Simulated annotators over gRPC: " + ", ".join(str(s["annotators"]) for s in steps)
                      + f" (load avg {steps[-1]['load_average']:.1f} at the end)")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


@app.command()
def main(out: Path = typer.Option(REPO_ROOT / "bench" / "results", help="Folder for JSON, report and PNG."),
         levels: str = typer.Option("10,25,50,100,200", help="Annotators per step, ramped in this order."),
         step_s: float = typer.Option(45.0, help="Seconds per step."),
         speedup: float = typer.Option(1.0, help="Human time divided by this (1 = real pace)."),
         timeout_s: float = typer.Option(30.0, help="Client deadline of each call."),
         max_p95_ms: float = typer.Option(2000.0, help="Breaking point: click p95 above this."),
         max_error_rate: float = typer.Option(0.01, help="Breaking point: errors per call above this."),
         quick: bool = typer.Option(False, help="Bounded smoke run: 5 and 10 annotators, 15 s each."),
         stop_at_break: bool = typer.Option(False, help="Stop the ramp at the first broken step.")) -> None:
    counts = [5, 10] if quick else [int(n) for n in levels.split(",")]
    step_s = 15.0 if quick else step_s
    out.mkdir(parents=True, exist_ok=True)
    stats = Stats()
    samples: list[dict] = []
    steps: list[dict] = []
    with LocalStack(["segmentation", "byproducts"]) as stack:
        settings = stack.settings
        workers = {}
        for service in ("byproducts", "quality"):
            log = stack.dir / f"{service}-worker.log"
            with log.open("wb") as sink:
                proc = subprocess.Popen(
                    [sys.executable, "-m", "celery", "-A", f"services.{service}.worker:app", "worker", "-Q", service,
                     "-n", f"{service}@%h", "--concurrency", "1", "--without-gossip", "--without-mingle",
                     "--without-heartbeat", "-l", "WARNING"],
                    cwd=REPO_ROOT, env={**os.environ, **settings.to_env()}, stdout=sink, stderr=subprocess.STDOUT,
                    start_new_session=True)
            stack.procs.append(proc)
            workers[service] = proc
        pgids = {"redis": stack.procs[0].pid, "tritonserver": stack.procs[1].pid,
                 "segmentation server": stack.procs[2].pid, "byproducts server": stack.procs[3].pid,
                 "byproducts worker": workers["byproducts"].pid, "quality worker": workers["quality"].pid}
        redis = Redis.from_url(settings.redis_url)
        images = _images(24)
        metadata = stack.auth
        seg_channel, bp_channel = stack.channel("segmentation"), stack.channel("byproducts")
        stubs = (segmentation_pb2_grpc.SegmentationStub(seg_channel), byproducts_pb2_grpc.ByproductsStub(bp_channel))
        stubs[0].StartSession(segmentation_pb2.StartSessionRequest(project_id=PROJECT, image_data=images[0][0]),
                              metadata=metadata, timeout=120)  # warm: decoding, the Redis connection
        current = {"n": 0}
        sampling = threading.Event()

        def sample() -> None:
            last_errors = 0
            while not sampling.is_set():
                now = time.time()
                with stats.lock:
                    recent = [ms for when, ms, _ in stats.clicks if when > now - 10]
                    errors = sum(sum(codes.values()) for codes in stats.errors.values())
                samples.append({"t": now, "annotators": current["n"], "p50_ms": _pct(recent, 50),
                                "p95_ms": _pct(recent, 95), "errors_per_s": errors - last_errors,
                                "queues": {q: int(redis.llen(q)) for q in QUEUES},
                                "rss_mb": _group_rss_mb(pgids), "load_average": os.getloadavg()[0]})
                last_errors = errors
                sampling.wait(1.0)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        with tqdm(total=len(counts) * step_s, unit="s", desc="ramp") as bar:
            for index, n in enumerate(counts):
                stop = threading.Event()
                current["n"] = n
                started = time.time()
                people = [Annotator(k, stubs, metadata, images, stats, stop, index, speedup, timeout_s)
                          for k in range(n)]
                for person in people:
                    person.start()
                while time.time() - started < step_s:
                    time.sleep(1)
                    bar.update(1)
                    bar.set_postfix(annotators=n, clicks=len(stats.clicks))
                stop.set()
                for person in people:
                    person.join(timeout_s + 15)
                clicks = [ms for _, ms, s in stats.clicks if s == index]
                errors = dict(stats.errors[index])
                window = [s for s in samples if started <= s["t"] <= time.time()]
                step = {"annotators": n, "started": started, "seconds": round(time.time() - started, 1),
                        "clicks": len(clicks), "clicks_per_s": round(len(clicks) / step_s, 2),
                        "click_ms": {"p50": _pct(clicks, 50), "p95": _pct(clicks, 95), "p99": _pct(clicks, 99),
                                     "max": round(max(clicks, default=0), 1)},
                        "requests": stats.requests[index], "errors": errors,
                        "error_rate": round(sum(errors.values()) / max(1, stats.requests[index]), 4),
                        "max_queue": {q: max((s["queues"][q] for s in window), default=0) for q in QUEUES},
                        "max_rss_mb": {k: max((s["rss_mb"][k] for s in window), default=0)
                                       for k in (window[0]["rss_mb"] if window else {})},
                        "load_average": os.getloadavg()[0]}
                step["broken"] = step["error_rate"] > max_error_rate or step["click_ms"]["p95"] > max_p95_ms
                steps.append(step)
                tqdm.write(f"{n:4d} annotators: {len(clicks)} clicks, p50/p95/p99 {step['click_ms']['p50']}/"
                           f"{step['click_ms']['p95']}/{step['click_ms']['p99']} ms, error rate "
                           f"{step['error_rate']:.3f}, load {step['load_average']:.1f}")
                if step["broken"] and stop_at_break:
                    break
        # nothing lost: every acknowledged byproduct event stored once, every submitted session scored
        engine = make_engine(settings.resolved_database_url)
        drained_from = time.time()

        def drained() -> bool:
            return (all(redis.llen(q) == 0 for q in QUEUES) and redis.hlen("bp:outbox") == 0
                    and redis.hlen("unacked") == 0)  # nothing waiting, nothing in a worker's hands

        try:
            _wait(drained, 600, "queues drained")
        except TimeoutError:
            pass
        sampling.set()
        sampler.join(5)
        with engine.connect() as db:
            stored = dict(db.execute(select(EventRow.session_id, func.count()).group_by(EventRow.session_id)).all())
            distinct = db.scalar(select(func.count(func.distinct(EventRow.event_id))))
            scored = set(db.execute(select(ScoredSessionRow.session_id)).scalars())
        engine.dispose()
        acked = stats.acked_events
        lost_events = sum(max(0, n - stored.get(sid, 0)) for sid, n in acked.items())
        duplicate_events = sum(stored.values()) - distinct
        unscored = len(stats.submitted - scored)
        for channel in (seg_channel, bp_channel):
            channel.close()
    broken = next((s for s in steps if s["broken"]), None)
    summary = {
        "transport": "gRPC (segmentation and byproducts services), Celery workers for byproducts and quality",
        "model": settings.triton_model_name, "refine": served_refinement(settings), "speedup": speedup, "step_s": step_s, "timeout_s": timeout_s,
        "thresholds": {"click_p95_ms": max_p95_ms, "error_rate": max_error_rate},
        "steps": [{k: v for k, v in s.items() if k != "started"} for s in steps],
        "breaking_point": broken["annotators"] if broken else None,
        "last_good": max((s["annotators"] for s in steps if not s["broken"]), default=None),
        "byproducts": {"events_acknowledged": sum(acked.values()), "events_stored": sum(stored.values()),
                       "lost": lost_events, "duplicates": duplicate_events,
                       "batches_never_acknowledged": stats.unacked_batches},
        "quality": {"sessions_submitted": len(stats.submitted), "scored": len(stats.submitted & scored),
                    "unscored": unscored, "sessions_abandoned_without_clicks": stats.abandoned},
        "drain_s": round(time.time() - drained_from, 1), "error_samples": stats.messages,
        "cpu_count": os.cpu_count(),
    }
    name = "annotator_load_quick" if quick else "annotator_load"
    (out / f"{name}.json").write_text(json.dumps({**summary, "samples": samples}, indent=2))
    _plot(samples, steps, out / f"{name}.png")
    rows = ["| annotators | clicks | clicks/s | p50 ms | p95 ms | p99 ms | error rate | max queue (bp/quality) "
            "| max RSS seg / triton MiB | load avg | broken |", "| " + " | ".join(["---"] * 11) + " |"]
    for s in steps:
        rss = s["max_rss_mb"]
        rows.append(f"| {s['annotators']} | {s['clicks']} | {s['clicks_per_s']} | {s['click_ms']['p50']} | "
                    f"{s['click_ms']['p95']} | {s['click_ms']['p99']} | {s['error_rate']:.3f} | "
                    f"{s['max_queue']['byproducts']}/{s['max_queue']['quality']} | "
                    f"{rss.get('segmentation server', 0)} / {rss.get('tritonserver', 0)} | {s['load_average']:.1f} | "
                    f"{'yes' if s['broken'] else 'no'} |")
    (out / f"{name}.md").write_text("\n".join([
        "# Annotator load test", "",
        f"Human-like simulated annotators over gRPC, {step_s:.0f} s per step, real human pace / {speedup}; "
        f"served model {summary['model']}, refinement {summary['refine']}; {os.cpu_count()} CPU cores shared. "
        "Breaking point: "
        f"click p95 > {max_p95_ms:.0f} ms or error rate > {max_error_rate:.0%}.", "", *rows, "",
        f"Breaking point: {summary['breaking_point']} annotators (last good: {summary['last_good']}).",
        f"Byproducts: {summary['byproducts']}.", f"Quality: {summary['quality']}.", "",
        f"![load]({name}.png)", ""]))
    print(json.dumps(summary, indent=2))
    if lost_events or duplicate_events or unscored:
        raise typer.Exit(1)


if __name__ == "__main__":
    app()
