"""Per-click latency of interactive segmentation: through the gRPC service vs Triton alone.

Side by side in one run, on one 480x480 image (a GrabCut photo resized), at 1, 8 and 32 concurrent
sessions, with Triton's dynamic batching on (the shipped config) and off (the same repository with
the dynamic_batching block removed):
  * ``triton``: the served default model (``clickseg_lite0``: zoom-in, the pretrained network on ONNX
    Runtime, focus pass, all in Triton), called with exactly what the service sends it (image, clicks,
    previous map fed back from the last answer, sessions of 8 clicks);
  * ``service``: AddClick through the segmentation service as deployed by default (on that model):
    service / triton is the service's own cost (click bookkeeping, Redis, RLE);
  * ``triton-clickseg``: the earlier network (``clickseg``, trained from scratch), one encoded crop per
    request; ``service-clickseg-raw``: AddClick through a service on it with GrabCut refinement off
    (its overhead ratio over triton-clickseg), ``service-clickseg``: with the refinement on, in the service.
Reports p50/p95 per click, the ratios, and CPU milliseconds per click of the Triton process (with its
Python-backend stubs) and of the service process during each row; absolute times hold only for the
machine they were measured on (the CPU build of Triton here). Candidates with exported weights
(``deploy/triton/candidates``) are added to the run's repository.

    python -m bench.segmentation_latency --out bench/results
"""

from __future__ import annotations

import json
import os
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
from services.common.settings import REPO_ROOT, Settings
from services.models.click_encoding import prepare
from services.segmentation.export import repository_with_candidates
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


def _repositories(workdir: Path) -> dict[str, Path]:
    """batching -> model repository: the served models (+ candidates), as shipped and with every
    dynamic_batching block removed."""
    linked = repository_with_candidates(workdir / "linked")
    repo = workdir / "models"
    shutil.copytree(linked, repo, symlinks=False)
    for config in repo.glob("*/config.pbtxt"):
        config.write_text(re.sub(r"dynamic_batching \{[^}]*\}\n", "", config.read_text()))
    return {"batching": linked, "no-batching": repo}


def _cpu_seconds(session_id: int) -> float:
    """User + system CPU seconds of every live process in the session (a server and its children)."""
    total = 0.0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[3]) == session_id:  # field 6 of /proc/PID/stat: the session id
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def _with_cpu(stack: LocalStack, service: str, measure) -> dict:
    """``measure()``'s stats plus CPU ms per click of Triton and of ``service`` while it ran."""
    names = {"triton": stack.pids["triton"], "service": stack.pids[service]} if service else {
        "triton": stack.pids["triton"]}
    before = {k: _cpu_seconds(pid) for k, pid in names.items()}
    stats = measure()
    for key, pid in names.items():
        stats[f"{key}_cpu_ms_per_click"] = round((_cpu_seconds(pid) - before[key]) * 1000 / stats["n"], 1)
    return stats


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


def measure_triton_pipeline(url: str, model: str, image: np.ndarray, mask: np.ndarray, concurrency: int,
                            seconds: float) -> dict:
    """A pipeline model called as the service calls it: image, clicks so far, previous map (uint8); the
    outputs the service asks for (the refined map and the network's own)."""
    clients = [triton.InferenceServerClient(url) for _ in range(concurrency)]
    outputs = [o["name"] for o in clients[0].get_model_config(model, as_json=True)["config"]["output"]]
    state = [{"clicks": [], "n": 8, "prev": None} for _ in range(concurrency)]
    pixels = image[None]

    def work(i: int) -> float:
        s = state[i]
        if s["n"] >= 8:
            s["clicks"], s["n"], s["prev"] = _clicks(mask, 8, seed=i * 1000 + len(s["clicks"])), 0, None
        s["n"] += 1
        rows = np.array([[[c.x, c.y, int(c.positive)] for c in s["clicks"][:s["n"]]]], dtype=np.int32)
        inputs = [triton.InferInput("IMAGE", list(pixels.shape), "UINT8"),
                  triton.InferInput("CLICKS", list(rows.shape), "INT32")]
        inputs[0].set_data_from_numpy(pixels)
        inputs[1].set_data_from_numpy(rows)
        if s["prev"] is not None:
            inputs.append(triton.InferInput("PREV", list(s["prev"].shape), "UINT8"))
            inputs[2].set_data_from_numpy(s["prev"])
        started = time.perf_counter()
        prob = clients[i].infer(model, inputs, outputs=[triton.InferRequestedOutput(n) for n in outputs],
                                client_timeout=60).as_numpy("PROB")
        elapsed = (time.perf_counter() - started) * 1000
        s["prev"] = np.clip(np.rint(prob * 255), 0, 255).astype(np.uint8)
        return elapsed

    work(0)
    state[0]["n"] = 8
    return _stats(_run_for(concurrency, seconds, work))


def measure_triton_encoded(url: str, crop: np.ndarray, concurrency: int, seconds: float) -> dict:
    """``clickseg`` called with one encoded crop per request (the bare network call)."""
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


ROWS = ("triton", "service", "triton-clickseg", "service-clickseg-raw", "service-clickseg")


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.4), dpi=110, sharey=True)
    markers = dict(zip(ROWS, "os^vD"))
    for ax, batching in zip(axes, ("batching", "no-batching")):
        rows = results[batching]
        xs = sorted(int(c) for c in rows)
        for name in ROWS:
            if name not in rows[str(xs[0])]:
                continue
            line, = ax.plot(xs, [rows[str(c)][name]["p95_ms"] for c in xs], marker=markers[name],
                            label=f"{name} p95")
            ax.plot(xs, [rows[str(c)][name]["p50_ms"] for c in xs], marker=markers[name], ls=":",
                    color=line.get_color(), label=f"{name} p50")
        ax.set(xscale="log", yscale="log", xlabel="concurrent sessions", title=f"dynamic {batching}",
               xticks=xs, xticklabels=[str(x) for x in xs])
        ax.grid(alpha=0.3)
    axes[0].set_ylabel(f"ms per click ({SIZE}x{SIZE} image)")
    axes[1].legend(fontsize=6, ncol=2)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _ratio(row: dict, a: str, b: str, key: str) -> float:
    return round(row[a][key] / row[b][key], 2)


@app.command()
def main(out: Path = Path("bench/results"), seconds: float = 8.0,
         concurrency: list[int] = typer.Option([1, 8, 32]),
         clickseg: bool = typer.Option(True, help="also measure the earlier network (clickseg)")) -> None:
    out.mkdir(parents=True, exist_ok=True)
    image, mask = _image()
    default = Settings().triton_model_name
    results: dict = {"image": f"{SIZE}x{SIZE}", "seconds_per_point": seconds, "model": default}
    workdir = Path(tempfile.mkdtemp(prefix="annot-bench-seg-"))
    overrides = {"segmentation-clickseg-raw": {"triton_model_name": "clickseg", "segmentation_refine": False},
                 "segmentation-clickseg": {"triton_model_name": "clickseg"}} if clickseg else {}
    try:
        for batching, repository in _repositories(workdir).items():
            with LocalStack(["segmentation"], triton_repository=repository, overrides=overrides) as stack:
                url = stack.settings.triton_grpc_url
                crop, _ = prepare(image, [Click(240, 240, True)], None)
                rows = {}
                for c in concurrency:
                    row = {
                        "triton": _with_cpu(stack, "", lambda: measure_triton_pipeline(
                            url, default, image, mask, c, seconds)),
                        "service": _with_cpu(stack, "segmentation", lambda: measure_service(
                            stack, "segmentation", image, mask, c, seconds)),
                    }
                    row["overhead_ratio_p50"] = _ratio(row, "service", "triton", "p50_ms")
                    row["overhead_ratio_p95"] = _ratio(row, "service", "triton", "p95_ms")
                    if clickseg:
                        row["triton-clickseg"] = _with_cpu(stack, "", lambda: measure_triton_encoded(
                            url, crop, c, seconds))
                        for variant in ("clickseg-raw", "clickseg"):
                            service = f"segmentation-{variant}"
                            row[f"service-{variant}"] = _with_cpu(stack, service, lambda: measure_service(
                                stack, service, image, mask, c, seconds))
                        row["clickseg_overhead_ratio_p50"] = _ratio(row, "service-clickseg-raw", "triton-clickseg",
                                                                    "p50_ms")
                        row["clickseg_refine_ratio_p50"] = _ratio(row, "service-clickseg", "service-clickseg-raw",
                                                                  "p50_ms")
                    rows[str(c)] = row
                    typer.echo(f"{batching:11s} c={c:2d}  " + " | ".join(
                        f"{name} p50 {row[name]['p50_ms']:7.1f} p95 {row[name]['p95_ms']:7.1f}"
                        for name in ROWS if name in row) + f" | overhead x{row['overhead_ratio_p50']}")
                results[batching] = rows
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    (out / "segmentation_latency.json").write_text(json.dumps(results, indent=1) + "\n")
    plot(results, out / "segmentation_latency.png")
    lines = [f"# Segmentation per-click latency ({SIZE}x{SIZE} image, this machine, CPU Triton)", "",
             f"Served default `{default}` (everything per click in Triton); CPU ms per click of each process", "",
             "| batching | sessions | Triton p50/p95 ms | service p50/p95 ms | overhead p50 / p95 | "
             "CPU ms/click: Triton, service |", "|---|---|---|---|---|---|"]
    for batching in ("batching", "no-batching"):
        for c, row in results[batching].items():
            t, sv = row["triton"], row["service"]
            lines.append(f"| {batching} | {c} | {t['p50_ms']} / {t['p95_ms']} | {sv['p50_ms']} / {sv['p95_ms']} "
                         f"| x{row['overhead_ratio_p50']} / x{row['overhead_ratio_p95']} | "
                         f"{sv['triton_cpu_ms_per_click']}, {sv['service_cpu_ms_per_click']} |")
    if clickseg:
        lines += ["", "The earlier network (`clickseg`; the service encodes clicks and refines with GrabCut)", "",
                  "| batching | sessions | Triton p50/p95 ms | service (no refine) p50/p95 ms | overhead p50 | "
                  "service (refine) p50/p95 ms |", "|---|---|---|---|---|---|"]
        for batching in ("batching", "no-batching"):
            for c, row in results[batching].items():
                t, raw, ref = row["triton-clickseg"], row["service-clickseg-raw"], row["service-clickseg"]
                lines.append(f"| {batching} | {c} | {t['p50_ms']} / {t['p95_ms']} | {raw['p50_ms']} / {raw['p95_ms']} "
                             f"| x{row['clickseg_overhead_ratio_p50']} | {ref['p50_ms']} / {ref['p95_ms']} |")
    (out / "segmentation_latency.md").write_text("\n".join(lines) + "\n")
    typer.echo(f"wrote {out / 'segmentation_latency.json'}, .md and .png")


if __name__ == "__main__":
    app()
