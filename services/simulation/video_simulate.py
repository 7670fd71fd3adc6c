"""Human-in-the-loop video segmentation, simulated: clicks needed for whole-sequence mIoU targets.

    python -m services.simulation.video_simulate --data ../shared/data/video --out var/video/sim.json

Per sequence, in one run: (1) the loop select -> simulated annotator answers -> fine-tune -> predict at
each granularity (frame, rect64, rect16, superpixel; ``video_selection``), starting from the first
frame segmented interactively; (2) the flow-warp baseline on the same frames the frame loop chose (no
fine-tuning); (3) every k-th frame annotated interactively, propagated by flow warping from the nearest
annotated frame and by interpolation; (4) every frame annotated interactively. Costs are clicks
(``video_annotator``); mIoU is the mean over frames of the IoU with the ground truth at the working
resolution. The loop stops at ``--stop-miou``, after ``--rounds`` rounds, or at the click budget (the
every-frame cost at IoU 0.90). Writes the JSON, and a PNG of mIoU against clicks beside it.
"""

from __future__ import annotations

import json
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import typer
from tqdm import tqdm

from services.common.masks import iou

TARGETS = (0.80, 0.90, 0.95)
FIRST_BUDGET = {"frame": 1, "rect64": 8, "rect16": 16, "superpixel": 16}  # round r asks (r + 1) x this

app = typer.Typer(add_completion=False)


@dataclass(frozen=True)
class SimConfig:
    short_side: int = 160  # fine-tuning and mIoU resolution
    click_side: int = 240  # resolution the simulated annotator clicks at
    max_frames: int = 0
    max_clicks: int = 20
    every_stride: int = 5  # every-frame cost estimated on every 5th frame (clicking is the slow part)
    granularities: tuple[str, ...] = ("frame", "rect64", "rect16", "superpixel")
    rounds: int = 6
    steps: int = 40
    first_steps: int = 60
    temporal_weight: float = 1.0
    frame_iou: float = 0.90
    stop_miou: float = 0.95
    ks: tuple[int, ...] = (20, 10, 5)  # multiples of every_stride: those frames are clicked anyway
    seed: int = 0


def miou(prob: np.ndarray, gt: np.ndarray) -> float:
    return float(np.mean([iou(p > 0.5, g) for p, g in zip(prob, gt)]))


def needed(curve: list[list[float]], target: float) -> int | None:
    """Fewest clicks at which the curve's mIoU reaches ``target``; None when it never does."""
    hits = [c for c, m in curve if m >= target]
    return int(min(hits)) if hits else None


def _loop(granularity: str, video, flows, annotator, config: SimConfig, budget: int) -> dict:
    from services.video.flow import propagate_interpolate, propagate_nearest
    from services.video.propagation import FineTuneConfig, Labels, Propagator
    from services.video.selection import candidates, make_grids, select

    length = len(video)
    labels = Labels.empty(length, *video.frames.shape[1:3])
    first = annotator.frame(0)
    labels.add(0, first.pixels, first.mask)
    clicks = first.clicks
    ft = FineTuneConfig(steps=config.first_steps, temporal_weight=config.temporal_weight, seed=config.seed)
    propagator = Propagator(video.frames, flows, ft)
    estimate = propagator.propagate(labels, propagate_interpolate(labels.full_frames(), flows, length))
    propagator.config = FineTuneConfig(**{**asdict(ft), "steps": config.steps})
    grids = make_grids(granularity, video.frames, video.original_size)
    curve = [[clicks, miou(estimate, video.masks)]]
    warp_curve = [[clicks, miou(propagate_nearest(labels.full_frames(), flows, length), video.masks)]]
    for r in range(config.rounds):
        if curve[-1][1] >= config.stop_miou or clicks >= budget:
            break
        cands = candidates(estimate, video.frames, grids, labels.known)
        rows = select(cands, FIRST_BUDGET[granularity] * (r + 1), config.seed + r)
        if not rows:
            break
        for row in rows:
            t = int(cands.frame[row])
            answer = annotator.frame(t) if granularity == "frame" else annotator.region(t, cands.pixels(row))
            labels.add(t, answer.pixels, answer.mask)
            clicks += answer.clicks
        estimate = propagator.propagate(labels, estimate)
        curve.append([clicks, miou(estimate, video.masks)])
        if granularity == "frame":
            warp_curve.append([clicks, miou(propagate_nearest(labels.full_frames(), flows, length), video.masks)])
    out = {f"finetune-{granularity}": curve}
    if granularity == "frame":
        out["flowwarp-selected-frames"] = warp_curve
    return out


def simulate_sequence(folder: Path, config: SimConfig) -> dict:
    import torch

    from services.common.settings import served_model_dir
    from services.models.click_pipeline import served_segmenters
    from services.simulation.video_annotator import LEVELS, VideoAnnotator
    from services.video.flow import (
        compute_flows,
        propagate_interpolate,
        propagate_nearest,
    )
    from services.video.frames import load_sequence

    torch.set_num_threads(1)
    started = time.perf_counter()
    video = load_sequence(folder, config.short_side, config.max_frames)
    if video.masks is None:
        raise FileNotFoundError(f"{folder}: ground-truth masks are needed to simulate the annotator")
    clicked = load_sequence(folder, config.click_side, config.max_frames)
    flows = compute_flows(video.frames)
    # the annotator clicks with the served default, run in process as Triton runs it
    annotator = VideoAnnotator(clicked.frames, clicked.masks, video.masks, video.scale,
                               served_segmenters(served_model_dir()),
                               config.frame_iou, config.max_clicks)
    length = len(video)
    # Every frame annotated interactively: clicks and mIoU estimated on every ``every_stride``-th frame.
    sampled = list(range(0, length, config.every_stride))
    runs = [annotator.run(t) for t in sampled]
    every = [[round(length * float(np.mean([r.noc[level] for r in runs]))),
              float(np.mean([iou(r.masks[level], clicked.masks[t]) for r, t in zip(runs, sampled)]))]
             for level in LEVELS]
    curves: dict[str, list[list[float]]] = {"every-frame-interactive": every}
    for name, propagate in (("every-k-flowwarp", propagate_nearest), ("every-k-interpolate", propagate_interpolate)):
        points = []
        for k in sorted(set(config.ks) | {length}, reverse=True):
            frames = list(range(0, length, k))
            answers = [annotator.frame(t) for t in frames]
            prob = propagate({a.frame: a.mask for a in answers}, flows, length)
            points.append([sum(a.clicks for a in answers), miou(prob, video.masks)])
        curves[name] = points
    budget = every[LEVELS.index(0.90)][0]
    for granularity in config.granularities:
        curves.update(_loop(granularity, video, flows, annotator, config, budget))
    return {
        "sequence": video.name, "frames": length, "working_size": list(video.frames.shape[1:3]),
        "every_frame_sampled": sampled,
        "every_frame_noc": {str(level): [r.noc[level] for r in runs] for level in LEVELS},
        "every_frame_failed": {str(level): sum(not r.reached[level] for r in runs) for level in LEVELS},
        "curves": curves,
        "needed": {name: {str(t): needed(c, t) for t in TARGETS} for name, c in curves.items()},
        "wall_s": round(time.perf_counter() - started, 1),
    }


def summarize(results: list[dict]) -> dict:
    """Per method and target: on how many sequences it was reached, and, over the sequences where both it
    and the every-frame baseline reached it, its clicks and the baseline's (saving = 1 - ours / theirs)."""
    methods = sorted({m for r in results for m in r["needed"]})
    table: dict = {}
    for method in methods:
        table[method] = {}
        for target in map(str, TARGETS):
            ours_all = [r["needed"].get(method, {}).get(target) for r in results]
            pairs = [(r["needed"][method][target], r["needed"]["every-frame-interactive"][target]) for r in results
                     if r["needed"].get(method, {}).get(target) is not None
                     and r["needed"]["every-frame-interactive"][target] is not None]
            ours, every = sum(p[0] for p in pairs), sum(p[1] for p in pairs)
            table[method][target] = {
                "reached": f"{sum(v is not None for v in ours_all)}/{len(results)}", "compared": len(pairs),
                "clicks": ours, "every_frame_clicks": every,
                "saving_vs_every_frame": round(1 - ours / every, 3) if every else None}
    return table


def markdown(summary: dict) -> str:
    """The summary as a Markdown table: clicks to each target (sequences reached) and the saving."""
    lines = ["| method | " + " | ".join(f"mIoU {t}: reached on; clicks vs every frame (saving)" for t in TARGETS)
             + " |",
             "| --- |" + " --- |" * len(TARGETS)]
    for method, row in summary.items():
        cells = []
        for t in map(str, TARGETS):
            v = row[t]
            saving = "" if v["saving_vs_every_frame"] is None else f"; {v['saving_vs_every_frame']:+.0%}"
            cells.append(f"{v['reached']}; {v['clicks']} vs {v['every_frame_clicks']} on {v['compared']} seq. ({saving[2:]})"
                         if v["compared"] else f"{v['reached']}; -")
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot(results: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = min(3, len(results))
    rows = -(-len(results) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(5 * cols, 3.6 * rows), squeeze=False)
    for ax, result in zip(axes.ravel(), results):
        for name, curve in sorted(result["curves"].items()):
            xs, ys = zip(*sorted(curve))
            style = "o:" if name.startswith("every") else "o-"
            ax.plot(xs, ys, style, ms=3, lw=1.2, label=name)
        for target in TARGETS:
            ax.axhline(target, color="grey", lw=0.6, ls="--")
        ax.set_title(f"{result['sequence']} ({result['frames']} frames)")
        ax.set_xlabel("clicks")
        ax.set_ylabel("whole-sequence mIoU")
        ax.set_ylim(0.3, 1.0)
    for ax in axes.ravel()[len(results):]:
        ax.axis("off")
    axes[0, 0].legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


@app.command()
def main(
    data: Path = typer.Option(..., exists=True, file_okay=False, help="DIR/<sequence>/frames|masks"),
    out: Path = typer.Option(..., help="JSON results; the PNG is written beside it"),
    sequences: str = typer.Option("", help="comma-separated sequence names; empty: all"),
    quick: bool = typer.Option(False, help="smoke run: 8 frames, 64/96 px, 1 round, few steps and clicks"),
    short_side: int = typer.Option(160, min=32, help="fine-tuning / mIoU resolution (short side, px)"),
    click_side: int = typer.Option(240, min=32, help="resolution the simulated annotator clicks at"),
    rounds: int = typer.Option(6, min=0), steps: int = typer.Option(40, min=1),
    jobs: int = typer.Option(1, min=1, help="sequences simulated in parallel (one process each)"),
) -> None:
    from services.video.frames import sequences as find_sequences

    config = SimConfig(short_side=short_side, click_side=click_side, rounds=rounds, steps=steps)
    if quick:
        config = SimConfig(short_side=64, click_side=96, max_frames=8, max_clicks=4, every_stride=2, rounds=1,
                           steps=3, first_steps=3, ks=(4, 2))
    folders = find_sequences(data, [s for s in sequences.split(",") if s] or None)
    order = [f.name for f in folders]
    results: list[dict] = []

    def write() -> dict:  # after every sequence, so a long run can be read while it goes on
        results.sort(key=lambda r: order.index(r["sequence"]))
        report = {"command": "python -m services.simulation.video_simulate " + " ".join(sys.argv[1:]),
                  "config": asdict(config), "summary": summarize(results), "sequences": results}
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(report, indent=1) + "\n")
        plot(results, out.with_suffix(".png"))
        return report

    with tqdm(total=len(folders), desc="sequences", unit="seq") as bar:
        if jobs == 1:
            for folder in folders:
                results.append(simulate_sequence(folder, config))
                write()
                bar.update()
        else:
            with ProcessPoolExecutor(jobs) as pool:
                futures = [pool.submit(simulate_sequence, f, config) for f in folders]
                for future in as_completed(futures):
                    results.append(future.result())
                    write()
                    bar.update()
    report = write()
    typer.echo(markdown(report["summary"]))


if __name__ == "__main__":
    app()
