"""NoC evaluation of the deployed segmentation (the real service and Triton) against a classic
click-seeded baseline, with the standard clicker, in one run on the same images.

    python -m services.segmentation.evaluate --data ../shared/data/grabcut --out var/eval/grabcut.json

DIR holds ``images/`` and ``masks/`` with matching stems (0 background, 255 object, 128 ignore).
Methods: ``model`` (the service as deployed: the default ``clickseg_lite0``, zoom-in, the pretrained
network and its focus pass all in Triton, nothing computed in the service), ``lite0`` (the service on
``clickseg_lite0`` by name, whatever the default), ``lite0-grabcut`` (the same with GrabCut seeded by the
network's map, inside Triton), ``lite0-nofocus`` (the network without the focus pass), ``clickseg`` (the
earlier network trained from scratch, GrabCut refinement in the service), ``clickseg-raw`` (that network
alone), ``grabcut`` (OpenCV GrabCut seeded from the clicks, in-process: the baseline is not a service).
``--model NAME`` (repeatable) adds the service on any model Triton serves as a project's interactive model
(``segmentation_project_models``): a fine-tuned one, or a foundation model's decoder (``sam_vit_b_decoder``,
written by ``export_foundation``; ``--repository DIR`` adds DIR's model folders to the private stack's
repository), side by side with the methods in one run (results under ``model:NAME``). Without
``--address`` a private stack (Redis, tritonserver, the segmentation servers) is started for the run and
stopped after it; its Triton repository adds the ``lite0`` variants to the served models.
Writes FILE.json (per-image IoU-per-click curves, mIoU@1..20, NoC@85/90, images never reaching 90%,
per-click latency) and FILE.png (mIoU against clicks).
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import grpc
import numpy as np
import typer
from tqdm import tqdm

from annotation.v1 import segmentation_pb2_grpc
from services.common.clicks import Click, Segmenter
from services.common.images import encode_png
from services.models.click_dataset import Sample, load_folder
from services.models.clicker import iou_curve, summarize
from services.models.grabcut import grabcut_segmenter
from services.simulation.segmentation_session import SegmentationSession

METHODS = ("model", "lite0", "lite0-grabcut", "lite0-nofocus", "clickseg", "clickseg-raw", "grabcut")
LOCAL_METHODS = ("grabcut",)
# Segmentation-server settings of each service method (``model`` is the deployment's own).
SERVER_SETTINGS = {
    "model": {},
    "lite0": {"triton_model_name": "clickseg_lite0"},
    "lite0-grabcut": {"triton_model_name": "clickseg_lite0_grabcut"},
    "lite0-nofocus": {"triton_model_name": "clickseg_lite0_nofocus"},
    "clickseg": {"triton_model_name": "clickseg"},
    "clickseg-raw": {"triton_model_name": "clickseg", "segmentation_refine": False},
}
# Copies of ``clickseg_lite0`` (the same weights, linked) with some of its parameters changed.
LITE0_VARIANTS = {
    "clickseg_lite0_grabcut": {"refine": "grabcut"},
    "clickseg_lite0_nofocus": {"refine": "none", "focus": "false"},
}
app = typer.Typer(add_completion=False)


class ServiceSegmenter:
    """One interactive session per image through the gRPC API; each new click is one AddClick."""

    def __init__(self, stub, metadata, project: str = "eval", timeout_s: float = 30.0) -> None:
        self.stub, self.metadata, self.project, self.timeout_s = stub, metadata, project, timeout_s
        self.latencies_ms: list[float] = []
        self.model_ms: list[float] = []

    def __call__(self, image: np.ndarray) -> Segmenter:
        session = SegmentationSession(self.stub, self.metadata, self.project, encode_png(image),
                                      image.shape[:2], annotator_id="simulated-clicker", timeout_s=self.timeout_s)
        sent = 0

        def segment(clicks: Sequence[Click], _previous) -> np.ndarray:
            nonlocal sent
            for click in clicks[sent:]:
                started = time.perf_counter()
                update = session.click(click.x, click.y, click.positive)
                self.latencies_ms.append((time.perf_counter() - started) * 1000)
                self.model_ms.append(update.model_latency_ms)
            sent = len(clicks)
            return session.mask.astype(np.float32)

        return segment


def lite0_repository(target: Path) -> Path:
    """Served models + ``clickseg_lite0``'s ``LITE0_VARIANTS``: with the GrabCut refinement and, for
    measuring the focus pass, without that pass."""
    from services.models.click_repository import set_parameter
    from services.segmentation.export import lite0_model_dir, repository_with_candidates

    source = lite0_model_dir()
    if not (source / "1" / "model.pt").exists():
        raise typer.BadParameter(f"no weights in {source}: export a checkpoint first "
                                 "(python -m services.segmentation.export --checkpoint ...)", param_hint="--method")
    models = {"clickseg_lite0": source}
    for name, params in LITE0_VARIANTS.items():
        variant = target / "_variants" / name
        (variant / "1").mkdir(parents=True)
        config = (source / "config.pbtxt").read_text().replace('name: "clickseg_lite0"', f'name: "{name}"')
        for key, value in params.items():
            config = set_parameter(config, key, value)
        (variant / "config.pbtxt").write_text(config)
        for file in ("model.py", "model.pt", "model.onnx"):
            (variant / "1" / file).symlink_to((source / "1" / file).resolve())
        models[name] = variant
    return repository_with_candidates(target / "repo", models)


def _latency(values: list[float]) -> dict:
    if not values:
        return {}
    a = np.asarray(values)
    return {"clicks": len(a), "p50_ms": round(float(np.percentile(a, 50)), 1),
            "p95_ms": round(float(np.percentile(a, 95)), 1), "mean_ms": round(float(a.mean()), 1)}


def run_method(name: str, make_segmenter, samples: Sequence[Sample], max_clicks: int,
               stop_at: float | None = None) -> dict:
    curves = {}
    for sample in tqdm(samples, desc=name, unit="img"):
        curves[sample.stem] = [round(v, 4) for v in iou_curve(make_segmenter(sample.image),
                                                               sample.annotation, max_clicks, stop_at)]
    return {"summary": summarize(list(curves.values()), max_clicks), "curves": curves}


def plot(results: dict, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=120)
    for name, result in results.items():
        s = result["summary"]
        ax.plot(range(1, len(s["miou_at"]) + 1), s["miou_at"], marker="o", ms=3,
                label=f"{name}: NoC@85 {s['noc85']:.2f}, NoC@90 {s['noc90']:.2f}")
    ax.axhline(0.85, color="grey", lw=0.6, ls=":")
    ax.axhline(0.90, color="grey", lw=0.6, ls="--")
    ax.set(xlabel="clicks", ylabel="mIoU", title=title, ylim=(0, 1), xticks=range(0, 21, 2))
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def served_model_settings(method: str) -> dict:
    """``model:NAME``: the service with NAME as every project's interactive model."""
    return {"segmentation_project_models": {"*": method.split(":", 1)[1]}}


def evaluate(data: Path, out: Path, methods: Sequence[str], max_clicks: int = 20, limit: int = 0,
             address: str = "", token: str = "", stop_at: float | None = None,
             repository_dir: Path | None = None) -> dict:
    samples = load_folder(data)
    if limit:
        samples = samples[:limit]
    if not samples:
        raise typer.BadParameter(f"no image/mask pairs under {data}", param_hint="--data")
    unknown = {m for m in methods if not m.startswith("model:")} - set(METHODS)
    if unknown:
        raise typer.BadParameter(f"unknown method(s) {sorted(unknown)}; choose from {METHODS}",
                                 param_hint="--method")
    results: dict = {}
    latency: dict = {}
    service_methods = [m for m in methods if m not in LOCAL_METHODS]
    stack = None
    repository = None
    if service_methods and not address:
        from services.simulation.stack import LocalStack

        overrides = {f"segmentation-{m}": SERVER_SETTINGS[m] if m in SERVER_SETTINGS else served_model_settings(m)
                     for m in service_methods}
        if any(m.startswith("lite0") for m in service_methods):
            repository = lite0_repository(Path(tempfile.mkdtemp(prefix="annot-eval-repo-")))
        if repository_dir is not None:
            from services.segmentation.export import repository_with_candidates

            extra = {p.name: p for p in sorted(repository_dir.iterdir()) if (p / "config.pbtxt").exists()}
            if repository is None:
                repository = repository_with_candidates(Path(tempfile.mkdtemp(prefix="annot-eval-repo-")) / "repo",
                                                        extra)
            else:
                for name, folder in extra.items():
                    if not (repository / name).exists():
                        (repository / name).symlink_to(folder.resolve(), target_is_directory=True)
        stack = LocalStack([], overrides=overrides, triton_repository=repository).__enter__()
    try:
        for method in methods:
            started = time.perf_counter()
            if method == "grabcut":
                results[method] = run_method(method, grabcut_segmenter, samples, max_clicks, stop_at)
            else:
                if stack is not None:
                    target = stack.addresses[f"segmentation-{method}"]
                    metadata = stack.auth
                else:
                    target, metadata = address, [("authorization", f"Bearer {token}")]
                with grpc.insecure_channel(target) as channel:
                    segmenter = ServiceSegmenter(segmentation_pb2_grpc.SegmentationStub(channel), metadata)
                    results[method] = run_method(method, segmenter, samples, max_clicks, stop_at)
                latency[method] = {"service": _latency(segmenter.latencies_ms),
                                   "model": _latency(segmenter.model_ms)}
            results[method]["seconds"] = round(time.perf_counter() - started, 1)
    finally:
        if stack is not None:
            stack.__exit__(None, None, None)
        if repository is not None:
            shutil.rmtree(repository.parent, ignore_errors=True)
    report = {
        "data": str(data), "images": len(samples), "max_clicks": max_clicks, "stop_at": stop_at,
        "image_sizes": sorted({f"{s.image.shape[1]}x{s.image.shape[0]}" for s in samples})[:10],
        "methods": list(methods),
        "summary": {m: r["summary"] for m, r in results.items()},
        "latency": latency,
        "seconds": {m: r["seconds"] for m, r in results.items()},
        "curves": {m: r["curves"] for m, r in results.items()},
    }
    if "grabcut" in results:
        base = results["grabcut"]["summary"]
        report["noc90_ratio_vs_grabcut"] = {
            m: round(base["noc90"] / r["summary"]["noc90"], 3) for m, r in results.items() if m != "grabcut"}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1) + "\n")
    plot(results, out.with_suffix(".png"), f"{data.name}: {len(samples)} images")
    return report


@app.command()
def main(
    data: Path = typer.Option(..., exists=True, file_okay=False, help="folder with images/ and masks/"),
    out: Path = typer.Option(..., help="results JSON; the plot goes beside it as .png"),
    method: list[str] = typer.Option(list(METHODS), help=f"any of {', '.join(METHODS)}; repeatable"),
    max_clicks: int = typer.Option(20, min=1, max=100),
    limit: int = typer.Option(0, min=0, help="only the first N images (0: all)"),
    address: str = typer.Option("", help="segmentation service host:port of a running platform"),
    token: str = typer.Option("", envvar="ANNOT_TOKEN", help="API key for --address"),
    stop_at: float = typer.Option(0.0, min=0.0, max=1.0, help="end an image's run at this IoU and "
                                  "carry it forward (exact NoC up to it, faster); 0: all clicks"),
    model: list[str] = typer.Option([], help="also the service on this served model (a click network or a "
                                    "foundation <name>_decoder); repeatable, side by side"),
    repository: Path = typer.Option(None, exists=True, file_okay=False,
                                    help="more model folders for the private stack (export_foundation --out)"),
) -> None:
    methods = [*method, *(f"model:{name}" for name in model)]
    report = evaluate(data, out, methods, max_clicks, limit, address, token, stop_at or None, repository)
    for name, s in report["summary"].items():
        typer.echo(f"{name:10s} NoC@85 {s['noc85']:6.2f}  NoC@90 {s['noc90']:6.2f}  "
                   f"failed@90 {s['failed90']:3d}/{s['images']}  mIoU@1/3/5 "
                   f"{s['miou_at'][0]:.3f}/{s['miou_at'][min(2, max_clicks - 1)]:.3f}/"
                   f"{s['miou_at'][min(4, max_clicks - 1)]:.3f}")
    for name, lat in report["latency"].items():
        typer.echo(f"{name:10s} per click: service p50 {lat['service'].get('p50_ms')} ms, "
                   f"p95 {lat['service'].get('p95_ms')} ms; Triton p50 {lat['model'].get('p50_ms')} ms")
    typer.echo(f"wrote {out} and {out.with_suffix('.png')}")


if __name__ == "__main__":
    app()
