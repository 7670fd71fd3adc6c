"""Per-click latency of interactive segmentation: through the gRPC service vs Triton alone.

Side by side in one run, on one 480x480 image (a GrabCut photo resized), at 1, 8 and 32 concurrent
sessions, with Triton's dynamic batching on (the shipped config) and off (the same repository with
the dynamic_batching block removed):
  * ``triton``: the bare network call, a tritonclient load generator sending one encoded crop per
    request (what perf_analyzer would measure; it is not installable here);
  * ``service-raw``: AddClick through the segmentation service with GrabCut refinement off (click
    encoding + Triton + RLE + Redis): the overhead ratio service-raw / triton is the service's cost;
  * ``service``: AddClick as deployed by default (refinement on).
Reports p50/p95 per click and the ratios; absolute times hold only for the machine they were
measured on (the CPU build of Triton here).

    python -m bench.segmentation_latency --out bench/results
"""

from __future__ import annotations

import json
import re
import shutil
import tempfile
import threading
import time
from concurrent import futures
from pathlib import Path

import cv2
import numpy as np
import tritonclient.grpc as triton
import typer
from PIL import Image

from annotation.v1 import common_pb2, segmentation_pb2, segmentation_pb2_grpc
from services.common.clicks import Click
from services.common.images import encode_png
from services.common.settings import REPO_ROOT
from services.models.click_encoding import prepare
from services.simulation.stack import LocalStack

IMAGE = REPO_ROOT.parent / "shared" / "data" / "grabcut" / "images" / "124080.jpg"
MASK = REPO_ROOT.parent / "shared" / "data" / "grabcut" / "masks" / "124080.png"
SIZE = 480
app = typer.Typer(add_completion=False)


def _image() -> tuple[np.ndarray, np.ndarray]:
    image = cv2.resize(np.asarray(Image.open(IMAGE).convert("RGB")), (SIZE, SIZE), interpolation=cv2.INTER_AREA)
    mask = cv2.resize(np.asarray(Image.open(MASK)), (SIZE, SIZE), interpolation=cv2.INTER_NEAREST) == 255
    return image, mask


def _clicks(mask: np.ndarray, n: int, seed: int) -> list[Click]:
    rng = np.random.default_rng(seed)
    inside, outside = np.argwhere(mask), np.argwhere(~mask)
    out = []
    for i in range(n):
        y, x = (inside if i % 3 != 1 else outside)[rng.integers(len(inside if i % 3 != 1 else outside))]
        out.append(Click(int(x), int(y), i % 3 != 1))
    return out


def _repository_without_batching(workdir: Path) -> Path:
    repo = workdir / "models"
    shutil.copytree(REPO_ROOT / "deploy" / "triton" / "models", repo)
    config = repo / "clickseg" / "config.pbtxt"
    text = re.sub(r"dynamic_batching \{[^}]*\}\n", "", config.read_text())
    config.write_text(text)
    return repo


def _stats(ms: list[float]) -> dict:
    a = np.asarray(ms)
    return {"n": len(a), "p50_ms": round(float(np.percentile(a, 50)), 1),
            "p95_ms": round(float(np.percentile(a, 95)), 1), "mean_ms": round(float(a.mean()), 1)}


def _run_for(concurrency: int, seconds: float, work) -> list[float]:
    """``concurrency`` threads call ``work(worker_index)`` (returns ms) until ``seconds`` have passed."""
    stop = time.monotonic() + seconds
    lock = threading.Lock()
    samples: list[float] = []

    def loop(index: int) -> None:
        while time.monotonic() < stop:
            ms = work(index)
            with lock:
                samples.append(ms)

    with futures.ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(loop, range(concurrency)))
    return samples


def measure_triton(url: str, crop: np.ndarray, concurrency: int, seconds: float) -> dict:
    clients = [triton.InferenceServerClient(url) for _ in range(concurrency)]
    batch = crop[None].astype(np.float32)

    def work(i: int) -> float:
        tensor = triton.InferInput("INPUT", list(batch.shape), "FP32")
        tensor.set_data_from_numpy(batch)
        started = time.perf_counter()
        clients[i].infer("clickseg", [tensor], outputs=[triton.InferRequestedOutput("PROB")], client_timeout=60)
        return (time.perf_counter() - started) * 1000

    work(0)
    return _stats(_run_for(concurrency, seconds, work))


def measure_service(stack: LocalStack, name: str, image: np.ndarray, mask: np.ndarray, concurrency: int,
                    seconds: float) -> dict:
    png = encode_png(image)
    with stack.channel(name) as channel:
        stub = segmentation_pb2_grpc.SegmentationStub(channel)
        state = [{"sid": None, "clicks": [], "n": 0} for _ in range(concurrency)]

        def work(i: int) -> float:
            s = state[i]
            if s["sid"] is None or s["n"] >= 8:  # a fresh session every 8 clicks, as annotators do
                s["sid"] = stub.StartSession(segmentation_pb2.StartSessionRequest(
                    project_id="bench", image_data=png), metadata=stack.auth, timeout=60).session.session_id
                s["clicks"], s["n"] = _clicks(mask, 8, seed=i * 1000 + len(s["clicks"])), 0
            click = s["clicks"][s["n"]]
            s["n"] += 1
            started = time.perf_counter()
            stub.AddClick(segmentation_pb2.AddClickRequest(
                project_id="bench", session_id=s["sid"],
                click=common_pb2.Click(x=click.x, y=click.y, positive=click.positive)),
                metadata=stack.auth, timeout=120)
            return (time.perf_counter() - started) * 1000

        work(0)
        return _stats(_run_for(concurrency, seconds, work))


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4), dpi=110, sharey=True)
    for ax, batching in zip(axes, ("batching", "no-batching")):
        rows = results[batching]
        for name, marker in (("triton", "o"), ("service-raw", "s"), ("service", "^")):
            xs = sorted(int(c) for c in rows)
            ax.plot(xs, [rows[str(c)][name]["p95_ms"] for c in xs], marker=marker, label=f"{name} p95")
            ax.plot(xs, [rows[str(c)][name]["p50_ms"] for c in xs], marker=marker, ls=":", label=f"{name} p50")
        ax.set(xscale="log", yscale="log", xlabel="concurrent sessions", title=f"dynamic {batching}",
               xticks=xs, xticklabels=[str(x) for x in xs])
        ax.grid(alpha=0.3)
    axes[0].set_ylabel(f"ms per click ({SIZE}x{SIZE} image)")
    axes[1].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


@app.command()
def main(out: Path = Path("bench/results"), seconds: float = 8.0,
         concurrency: list[int] = typer.Option([1, 8, 32])) -> None:
    out.mkdir(parents=True, exist_ok=True)
    image, mask = _image()
    results: dict = {"image": f"{SIZE}x{SIZE}", "seconds_per_point": seconds}
    workdir = Path(tempfile.mkdtemp(prefix="annot-bench-seg-"))
    try:
        for batching, repository in (("batching", None), ("no-batching", _repository_without_batching(workdir))):
            with LocalStack(["segmentation"], triton_repository=repository,
                            overrides={"segmentation-raw": {"segmentation_refine": False}}) as stack:
                crop, _ = prepare(image, [Click(240, 240, True)], None)
                rows = {}
                for c in concurrency:
                    row = {
                        "triton": measure_triton(stack.settings.triton_grpc_url, crop, c, seconds),
                        "service-raw": measure_service(stack, "segmentation-raw", image, mask, c, seconds),
                        "service": measure_service(stack, "segmentation", image, mask, c, seconds),
                    }
                    row["overhead_ratio_p50"] = round(row["service-raw"]["p50_ms"] / row["triton"]["p50_ms"], 2)
                    row["overhead_ratio_p95"] = round(row["service-raw"]["p95_ms"] / row["triton"]["p95_ms"], 2)
                    row["refine_ratio_p50"] = round(row["service"]["p50_ms"] / row["service-raw"]["p50_ms"], 2)
                    rows[str(c)] = row
                    typer.echo(f"{batching:11s} c={c:2d}  triton p50 {row['triton']['p50_ms']:7.1f} p95 "
                               f"{row['triton']['p95_ms']:7.1f} | service-raw p50 {row['service-raw']['p50_ms']:7.1f}"
                               f" p95 {row['service-raw']['p95_ms']:7.1f} | service p50 "
                               f"{row['service']['p50_ms']:7.1f} p95 {row['service']['p95_ms']:7.1f} ms | "
                               f"overhead x{row['overhead_ratio_p50']}")
                results[batching] = rows
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    (out / "segmentation_latency.json").write_text(json.dumps(results, indent=1) + "\n")
    plot(results, out / "segmentation_latency.png")
    lines = [f"# Segmentation per-click latency ({SIZE}x{SIZE} image, this machine, CPU Triton)", "",
             "| batching | sessions | Triton p50/p95 ms | service (no refine) p50/p95 ms | overhead p50 | "
             "service (refine, default) p50/p95 ms |", "|---|---|---|---|---|---|"]
    for batching in ("batching", "no-batching"):
        for c, row in results[batching].items():
            lines.append(f"| {batching} | {c} | {row['triton']['p50_ms']} / {row['triton']['p95_ms']} | "
                         f"{row['service-raw']['p50_ms']} / {row['service-raw']['p95_ms']} | "
                         f"x{row['overhead_ratio_p50']} | {row['service']['p50_ms']} / {row['service']['p95_ms']} |")
    (out / "segmentation_latency.md").write_text("\n".join(lines) + "\n")
    typer.echo(f"wrote {out / 'segmentation_latency.json'}, .md and .png")


if __name__ == "__main__":
    app()
