"""Does a refinement on top of the served click network pay for itself, on more than one kind of image?

    python -m bench.click_refinement --out bench/results

The served default's TorchScript pipeline (``deploy/triton/models/clickseg_lite0``) runs in process, one
torch thread, with the standard clicker to IoU 0.90 (at most 20 clicks), in variants side by side:
``network`` (what Triton serves: zoom-in, network, focus pass), ``nofocus`` (no focus pass), ``grabcut``
(GrabCut seeded by the network's map, ``models.grabcut.refine``, the refinement served until this
measurement) and ``grabcut-gated`` (the cut kept only where it agrees with the network, IoU >= 0.85);
``clickseg-grabcut`` is the hybrid served before this wave (the earlier ``clickseg`` network, 192 px
zoom-in crops, GrabCut refinement), for comparison.
``--knob NAME=VALUE`` adds the served network with one of the pipeline's test-time settings changed
(``size``, ``focus_size``, ``expand``, ``focus_expand``, ``min_fraction``, ``focus_min_px``,
``focus_min_gain``), a variant ``network:NAME=VALUE`` each: do the served settings still pay on all three sets?
In-process is what Triton computes (``tests/segmentation/test_service.py`` holds the service to it).

Three sets, so that no one small set decides: GrabCut's 50 images (large salient objects, the set GrabCut
was made for), the 60 COCO-MVal objects the shipped checkpoint was chosen on (held out of its training;
``training.json``'s ``val_stems``) and DAVIS 2016 frames (every 20th frame of each sequence under
``--video``). Writes ``click_refinement.json`` (NoC@85/90, images never at 90%, mIoU after one click,
p50/p95 per click of each variant on each set) and ``click_refinement.png``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import typer
from PIL import Image
from tqdm import tqdm

from services.common.masks import iou
from services.common.settings import REPO_ROOT, served_model_dir
from services.models.click_dataset import Sample, load_folder
from services.models.clicker import iou_curve, summarize

VARIANTS = ("network", "nofocus", "grabcut", "grabcut-gated", "clickseg-grabcut")
GATE_IOU = 0.85
FRAME_STEP = 20
DATA = REPO_ROOT.parent / "shared" / "data"
app = typer.Typer(add_completion=False)


def video_frames(root: Path, step: int = FRAME_STEP) -> list[Sample]:
    """Every ``step``-th frame (from the first) of each ``<sequence>/frames`` + ``masks`` under ``root``."""
    samples = []
    for sequence in sorted(p for p in root.iterdir() if (p / "frames").is_dir()):
        for frame in sorted((sequence / "frames").glob("*.jpg"))[::step]:
            mask = sequence / "masks" / f"{frame.stem}.png"
            samples.append(Sample(f"{sequence.name}/{frame.stem}", np.asarray(Image.open(frame).convert("RGB")),
                                  np.asarray(Image.open(mask).convert("L"))))
    return samples


def load_sets(grabcut: Path, coco: Path, video: Path, model_dir: Path) -> dict[str, list[Sample]]:
    heldout = json.loads((model_dir / "1" / "training.json").read_text())["val_stems"]
    return {"grabcut": load_folder(grabcut), "coco_mval_heldout": load_folder(coco, heldout),
            "davis_frames": video_frames(video)}


def refiner(variant: str) -> Callable | None:
    from services.models import grabcut

    if variant == "grabcut":
        return grabcut.refine
    if variant == "grabcut-gated":
        def gated(image, prob, clicks):
            cut = grabcut.refine(image, prob, clicks)
            return cut if iou(cut > 0.5, prob > 0.5) >= GATE_IOU else prob
        return gated
    return None


def earlier_hybrid() -> Callable:
    """``image -> Segmenter`` of ``clickseg`` with GrabCut, as the service ran it before this wave."""
    from services.models import click_models, grabcut
    from services.models.click_predictor import Predictor

    folder = served_model_dir("clickseg") / "1"
    config = json.loads((folder / "training.json").read_text())["config"]
    return Predictor.from_model(click_models.load_served(folder / "model.pt", config), config,
                                refine=grabcut.refine).segmenter


KNOBS = {"size": int, "focus_size": int, "focus_min_px": int,  # the pipeline's attribute types
         "expand": float, "focus_expand": float, "min_fraction": float, "focus_min_gain": float}


def knob_variant(text: str) -> str:
    """``NAME=VALUE`` -> the variant ``network:NAME=VALUE``, checked (a pixel count must be whole)."""
    name, _, value = text.partition("=")
    try:
        number = float(value)
    except ValueError:
        number = None
    if name not in KNOBS or number is None or number <= 0:
        raise typer.BadParameter(f"{text!r}: expected NAME=VALUE, NAME one of {', '.join(KNOBS)}, VALUE > 0",
                                 param_hint="--knob")
    if KNOBS[name] is int and not number.is_integer():
        raise typer.BadParameter(f"{text!r}: {name} is a whole number of pixels", param_hint="--knob")
    return f"network:{name}={value}"


def run_variant(variant: str, sets: dict[str, list[Sample]], model_dir: Path, position: int = 0) -> dict:
    import torch

    from services.models import click_pipeline

    torch.set_num_threads(1)
    pipeline = torch.jit.load(str(model_dir / "1" / "model.pt")).eval()
    pipeline.focus = variant != "nofocus"
    if variant.startswith("network:"):
        name, value = variant.removeprefix("network:").split("=")
        setattr(pipeline, name, KNOBS[name](float(value)))
    refine = refiner(variant)
    hybrid = earlier_hybrid() if variant == "clickseg-grabcut" else None
    figures = {}
    for name, samples in sets.items():
        curves, seconds = [], []
        for sample in tqdm(samples, desc=f"{variant}/{name}", unit="img", position=position, leave=False):
            network = hybrid(sample.image) if hybrid else click_pipeline.segmenter(pipeline, sample.image)

            def segment(clicks, prev, network=network, image=sample.image):
                started = time.perf_counter()
                prob = network(clicks, prev)
                prob = prob if refine is None else refine(image, prob, clicks)
                seconds.append(time.perf_counter() - started)
                return prob

            curves.append(iou_curve(segment, sample.annotation, 20, stop_at=0.90))
        summary = summarize(curves)
        figures[name] = {"images": summary["images"], "noc85": summary["noc85"], "noc90": summary["noc90"],
                         "failed90": summary["failed90"], "miou_at_1": round(float(summary["miou_at"][0]), 4),
                         "p50_ms": round(float(np.percentile(seconds, 50)) * 1000, 1),
                         "p95_ms": round(float(np.percentile(seconds, 95)) * 1000, 1)}
    return figures


def plot(report: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    variants, sets = list(report["variants"]), list(report["sets"])
    fig, ax = plt.subplots(figsize=(8, 4))
    width = 0.8 / len(variants)
    for i, variant in enumerate(variants):
        values = [report["variants"][variant][s]["noc90"] for s in sets]
        bars = ax.bar(np.arange(len(sets)) + i * width, values, width, label=variant)
        ax.bar_label(bars, fmt="%.2f", fontsize=7)
    ax.set_xticks(np.arange(len(sets)) + width * (len(variants) - 1) / 2,
                  [f"{s}\n({report['sets'][s]} images)" for s in sets])
    ax.set_ylabel("NoC@90 (lower is better)")
    ax.set_title("Served click network with and without refinement")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


@app.command()
def main(
    out: Path = typer.Option(Path("bench/results"), help="folder for click_refinement.json and .png"),
    grabcut: Path = typer.Option(DATA / "grabcut", exists=True, file_okay=False),
    coco: Path = typer.Option(DATA / "train" / "coco_mval", exists=True, file_okay=False),
    video: Path = typer.Option(DATA / "video", exists=True, file_okay=False),
    variant: list[str] = typer.Option(list(VARIANTS[:4]), help=f"any of {', '.join(VARIANTS)}"),
    knob: list[str] = typer.Option([], help=f"NAME=VALUE, one extra variant each; NAME one of {', '.join(KNOBS)}"),
    jobs: int = typer.Option(2, min=1, help="variants measured at once (one process, one thread each)"),
) -> None:
    unknown = sorted(set(variant) - set(VARIANTS))
    if unknown:
        raise typer.BadParameter(f"unknown variant(s) {unknown}; choose from {VARIANTS}", param_hint="--variant")
    variant = list(variant) + [knob_variant(k) for k in knob]
    model_dir = served_model_dir()
    sets = load_sets(grabcut, coco, video, model_dir)
    started = time.perf_counter()
    with ProcessPoolExecutor(jobs) as pool:
        futures = {v: pool.submit(run_variant, v, sets, model_dir, i % jobs) for i, v in enumerate(variant)}
        results = {v: f.result() for v, f in futures.items()}
    report = {"model": model_dir.name, "sets": {k: len(v) for k, v in sets.items()}, "stop_at": 0.90,
              "max_clicks": 20, "torch_threads": 1, "jobs": jobs, "wall_s": round(time.perf_counter() - started),
              "variants": results}
    out.mkdir(parents=True, exist_ok=True)
    (out / "click_refinement.json").write_text(json.dumps(report, indent=1) + "\n")
    plot(report, out / "click_refinement.png")
    for v, per_set in results.items():
        print(f"{v:24s} " + "  ".join(f"{s} NoC@90 {f['noc90']:.2f} ({f['failed90']} never) p95 {f['p95_ms']:.0f} ms"
                                      for s, f in per_set.items()))
    print(f"wrote {out / 'click_refinement.json'} and .png")


if __name__ == "__main__":
    app()
