"""Sessions simulated through the real segmentation service, with their true outcome, cached as JSONL.

    python -m services.quality.simulate --data ../shared/data/train/coco_mval \
        --out var/quality/sessions/<fingerprint>/coco_mval.jsonl --limit 400

Each record is ``{"key", "stem", "profile", "seed", "true_iou", "undos", "summary"}`` where ``summary`` has
the shape the quality model reads (``summary.py``: ``session``, ``clicks``, ``steps``, ``mask``; what
``quality.annotation_submitted`` makes of a submitted session's event), assembled from the gRPC replies. The simulated annotator
(``services.simulation.annotator``) drives StartSession / AddClick / Undo / FinishSession; nothing runs
in-process. Records already in ``--out`` are kept and skipped, so an interrupted run resumes.
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from pathlib import Path

import grpc
import numpy as np
import typer
from tqdm import tqdm

from annotation.v1 import segmentation_pb2_grpc
from services.common.clicks import split_annotation
from services.common.images import encode_png
from services.common.masks import iou as masked_iou
from services.models.click_dataset import Sample, load_folder
from services.simulation.annotator import SimulatedAnnotator, sample_profile
from services.simulation.segmentation_session import SegmentationSession

STATS = ("mean_foreground_probability", "mean_confidence", "uncertain_fraction", "click_confidence",
         "area_px", "threshold")
app = typer.Typer(add_completion=False)


def session_seed(stem: str, repeat: int, seed: int) -> int:
    return zlib.crc32(f"{stem}:{repeat}:{seed}".encode())


def run_session(stub, metadata, sample: Sample, seed: int, project: str = "quality-sim",
                profile_weights: dict | None = None, timeout_s: float = 60.0) -> dict:
    """One annotation of ``sample`` by a sampled annotator, through the service; the cache record."""
    rng = np.random.default_rng(seed)
    profile = sample_profile(rng, profile_weights)
    annotator = SimulatedAnnotator(sample.annotation, profile, rng)
    session = SegmentationSession(stub, metadata, project, encode_png(sample.image), sample.image.shape[:2],
                                  annotator_id=f"sim-{seed % 50}", task_id=sample.stem, image_id=sample.stem,
                                  timeout_s=timeout_s)
    sid, shape = session.session_id, sample.image.shape[:2]
    clicks: list[dict] = []
    steps: list[dict] = []
    with session:
        while (action := annotator.next_action(session.mask)) is not None:
            if action.kind == "undo":
                session.undo()
                clicks.pop()
                steps.pop()
            else:
                c = action.click
                update = session.click(c.x, c.y, c.positive, action.t_ms)
                clicks.append({"x": float(c.x), "y": float(c.y), "positive": c.positive,
                               "t_ms": action.t_ms, "index": len(clicks)})
                steps.append({"stats": {k: float(getattr(update.stats, k)) for k in STATS},
                              "iou_with_previous": float(update.iou_with_previous),
                              "model_latency_ms": float(update.model_latency_ms)})
    finished = session.finish()
    mask = session.mask
    gt, ignore = split_annotation(sample.annotation)
    final = np.zeros(shape, bool) if mask is None else mask
    session = {"session_id": sid, "project_id": project, "image_id": sample.stem, "uri": "",
               "width": int(shape[1]), "height": int(shape[0]), "annotator_id": finished.annotator_id,
               "task_id": finished.task_id, "label": "", "state": "FINISHED", "outcome": "SUBMITTED",
               "create_time": finished.create_time.ToNanoseconds() / 1e9,
               "update_time": finished.update_time.ToNanoseconds() / 1e9,
               "finish_time": finished.update_time.ToNanoseconds() / 1e9}
    return {"stem": sample.stem, "seed": seed, "profile": asdict(profile), "undos": annotator.undos,
            "true_iou": round(masked_iou(final, gt, ignore), 5),
            "summary": {"session": session, "clicks": clicks, "steps": steps,
                        "mask": {"size": [int(v) for v in finished.mask.size], "counts": finished.mask.counts}}}


def read_records(path: Path) -> list[dict]:
    """The cached records, one per key (the last written wins)."""
    if not path.exists():
        return []
    records = {}
    for line in path.read_text().splitlines():
        if line.strip():
            record = json.loads(line)
            records[record["key"]] = record
    return list(records.values())


def simulate(stub, metadata, samples: Sequence[Sample], out: Path, repeats: int = 1, seed: int = 0,
             workers: int = 2, profile_weights: dict | None = None) -> list[dict]:
    """Simulates ``repeats`` sessions per sample (skipping keys already in ``out``); their records."""
    done = {r["key"] for r in read_records(out)}
    wanted = [f"{s.stem}:{r}:{seed}" for s in samples for r in range(repeats)]
    jobs = [(s, r) for s in samples for r in range(repeats) if f"{s.stem}:{r}:{seed}" not in done]
    out.parent.mkdir(parents=True, exist_ok=True)

    def one(job) -> dict:
        sample, repeat = job
        record = run_session(stub, metadata, sample, session_seed(sample.stem, repeat, seed),
                             profile_weights=profile_weights)
        return {"key": f"{sample.stem}:{repeat}:{seed}", **record}

    pool = ThreadPoolExecutor(workers)
    try:
        with out.open("a") as sink:
            for record in tqdm(pool.map(one, jobs), total=len(jobs), desc=f"simulate {out.stem}", unit="session"):
                sink.write(json.dumps(record) + "\n")
                sink.flush()
    finally:  # on an error or Ctrl-C, drop the sessions not started yet
        pool.shutdown(wait=True, cancel_futures=True)
    by_key = {r["key"]: r for r in read_records(out)}
    return [by_key[k] for k in wanted]


def simulate_folder(data: Path, out: Path, limit: int = 0, repeats: int = 1, seed: int = 0, workers: int = 2,
                    address: str = "", token: str = "", profile_weights: dict | None = None,
                    missing: bool = True) -> list[dict]:
    """Records of ``repeats`` sessions on each of ``limit`` images spread over DIR; the ones not cached yet
    are simulated on a private stack (or on ``address``), or left out when ``missing`` is false."""
    samples = load_folder(data)
    if limit and len(samples) > limit:  # spread over the folder (stems are sorted by class)
        samples = [samples[i] for i in np.linspace(0, len(samples) - 1, limit).round().astype(int)]
    if not samples:
        raise typer.BadParameter(f"no image/mask pairs under {data}", param_hint="--data")
    cached = {r["key"]: r for r in read_records(out)}
    wanted = [f"{s.stem}:{r}:{seed}" for s in samples for r in range(repeats)]
    if not missing or all(k in cached for k in wanted):  # nothing to simulate: no stack needed
        return [cached[k] for k in wanted if k in cached]
    with _segmentation(address, token) as (channel, metadata):
        return simulate(segmentation_pb2_grpc.SegmentationStub(channel), metadata, samples, out, repeats, seed,
                        workers, profile_weights)


class _segmentation:
    """A channel to the segmentation service: the given address, or a private LocalStack."""

    def __init__(self, address: str, token: str) -> None:
        self.address, self.token, self.stack = address, token, None

    def __enter__(self) -> tuple[grpc.Channel, list]:
        if self.address:
            self.channel = grpc.insecure_channel(self.address)
            return self.channel, [("authorization", f"Bearer {self.token}")]
        from services.simulation.stack import LocalStack

        self.stack = LocalStack(["segmentation"]).__enter__()
        self.channel = self.stack.channel("segmentation")
        return self.channel, self.stack.auth

    def __exit__(self, *exc) -> None:
        self.channel.close()
        if self.stack is not None:
            self.stack.__exit__(*exc)


@app.command()
def main(
    data: Path = typer.Option(..., exists=True, file_okay=False, help="folder with images/ and masks/"),
    out: Path = typer.Option(..., help="JSONL cache of simulated sessions (appended, resumable)"),
    limit: int = typer.Option(0, min=0, help="N image/mask pairs spread over the folder (0: all)"),
    repeats: int = typer.Option(1, min=1, help="sessions per image (different annotators)"),
    seed: int = typer.Option(0),
    workers: int = typer.Option(2, min=1, help="sessions in flight at once"),
    address: str = typer.Option("", help="segmentation service host:port of a running platform"),
    token: str = typer.Option("", envvar="ANNOT_TOKEN", help="API key for --address"),
) -> None:
    records = simulate_folder(data, out, limit, repeats, seed, workers, address, token)
    ious = np.asarray([r["true_iou"] for r in records])
    typer.echo(f"{len(records)} sessions in {out}: mean IoU {ious.mean():.3f}, "
               f"{(ious < 0.85).mean():.1%} below 0.85, mean clicks "
               f"{np.mean([len(r['summary']['clicks']) for r in records]):.1f}")


if __name__ == "__main__":
    app()
