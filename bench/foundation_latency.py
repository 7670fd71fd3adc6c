"""A foundation model (SAM / SAM 2) through the platform: the image encoder (once per session) and the prompt
decoder (per click) timed apart, and clicks per second at 1, 8 and 32 concurrent sessions.

The model is exported by the same command a user runs (``export_foundation`` in the export venv, ``make
sam-setup``) and served by the real tritonserver (CPU here: the Python backend running onnxruntime); the
segmentation service runs with it as every project's interactive model. Without ``--checkpoint`` the official
architecture is built at random initialisation: its compute, and so every time here, does not depend on the
weights (accuracy, NoC, needs a real checkpoint: README "Foundation models"). Rows:
  * ``encoder``: Triton's encoder call alone (tritonclient, the image resized into 1024 x 1024);
  * ``start_session``: StartSession through the service (decode the PNG, resize, the encoder, 2 MiB of
    float16 features into Redis (SAM; SAM 2: 8 MiB));
  * ``decoder``: Triton's decoder call alone, with the previous step's logits;
  * ``add_click``: AddClick through the service (features from Redis, the decoder, upsampling, RLE);
  * ``clicks_per_s`` at 1/8/32 sessions: each session clicks ``--clicks`` times in a row (after its
    StartSession, not counted), all sessions at once; the decoder's dynamic batching groups them.
Absolute times hold only for the machine (and CPU vs GPU) they were measured on.

    python -m bench.foundation_latency --out bench/results                 # SAM ViT-B, random weights
    python -m bench.foundation_latency --family sam --variant vit_h --checkpoint sam_vit_h_4b8939.pth
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import typer
from PIL import Image

from annotation.v1 import common_pb2, segmentation_pb2, segmentation_pb2_grpc
from services.common.clicks import Click
from services.common.images import encode_png
from services.common.settings import REPO_ROOT
from services.segmentation.export import repository_with_candidates
from services.segmentation.triton_foundation import FoundationModel
from services.simulation.stack import LocalStack

IMAGE = REPO_ROOT.parent / "shared" / "data" / "grabcut" / "images" / "124080.jpg"
REQUIREMENTS = REPO_ROOT / "deploy" / "triton" / "foundation" / "requirements-export.txt"
app = typer.Typer(add_completion=False)


def export_python() -> Path:
    digest = hashlib.sha256(REQUIREMENTS.read_bytes()).hexdigest()[:12]
    return Path(os.environ.get("ANNOT_SAM_PYTHON") or
                Path.home() / ".cache" / "annotation-platform" / f"venv-sam-{digest}" / "bin" / "python")


def export(family: str, variant: str, checkpoint: Path | None, work: Path) -> tuple[Path, str]:
    """The exported repository and the decoder's name; a random-weights checkpoint when none is given."""
    python = export_python()
    if not python.exists():
        raise typer.BadParameter(f"the export venv is missing ({python}): run `make sam-setup`")
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    if checkpoint is None:
        checkpoint = work / f"{family}_{variant}_random.pt"
        script = ("import sys, torch\nfrom services.segmentation.export_foundation import build\n"
                  f"state = build({family!r}, {variant!r}).state_dict()\n"
                  f"torch.save({{'model': state}} if {family!r} == 'sam2' else state, sys.argv[1])\n")
        subprocess.run([str(python), "-c", script, str(checkpoint)], check=True, cwd=REPO_ROOT, env=env)
    name = "bench"
    subprocess.run([str(python), "-m", "services.segmentation.export_foundation", "--family", family, "--variant",
                    variant, "--checkpoint", str(checkpoint), "--out", str(work / "foundation"), "--name", name,
                    "--no-verify"], check=True, cwd=REPO_ROOT, env=env)
    return work / "foundation", f"{name}_decoder"


def _stats(values: list[float]) -> dict:
    a = np.asarray(values)
    return {"n": len(a), "p50_ms": round(float(np.percentile(a, 50)), 1),
            "p95_ms": round(float(np.percentile(a, 95)), 1), "mean_ms": round(float(a.mean()), 1)}


def _image(side: int) -> np.ndarray:
    image = np.asarray(Image.open(IMAGE).convert("RGB")) if IMAGE.exists() else \
        np.random.default_rng(0).integers(0, 256, (side, side, 3), dtype=np.uint8)
    return cv2.resize(image, (side, side), interpolation=cv2.INTER_AREA)


def _clicks(count: int, side: int, seed: int) -> list[Click]:
    rng = np.random.default_rng(seed)
    return [Click(int(x), int(y), bool(i % 3 != 1)) for i, (x, y) in
            enumerate(rng.integers(side // 8, side - side // 8, (count, 2)))]


def run_sessions(stack: LocalStack, name: str, image: np.ndarray, sessions: int, clicks: int) -> dict:
    """``sessions`` sessions at once, each StartSession then ``clicks`` AddClicks; per-call times."""
    png = encode_png(image)
    starts, adds, models = [], [], []
    lock = threading.Lock()
    barrier = threading.Barrier(sessions)
    window = {}

    def one(index: int) -> None:
        with stack.channel(name) as channel:
            stub = segmentation_pb2_grpc.SegmentationStub(channel)
            t0 = time.perf_counter()
            sid = stub.StartSession(segmentation_pb2.StartSessionRequest(project_id="bench", image_data=png),
                                    metadata=stack.auth, timeout=600).session.session_id
            start_ms = (time.perf_counter() - t0) * 1000
            barrier.wait()
            with lock:
                window.setdefault("begin", time.perf_counter())
            mine, model_ms = [], []
            for click in _clicks(clicks, image.shape[0], index):
                t0 = time.perf_counter()
                reply = stub.AddClick(segmentation_pb2.AddClickRequest(
                    project_id="bench", session_id=sid,
                    click=common_pb2.Click(x=click.x, y=click.y, positive=click.positive)),
                    metadata=stack.auth, timeout=600)
                mine.append((time.perf_counter() - t0) * 1000)
                model_ms.append(reply.update.model_latency_ms)
            with lock:
                starts.append(start_ms)
                adds.extend(mine)
                models.extend(model_ms)
                window["end"] = time.perf_counter()

    threads = [threading.Thread(target=one, args=(i,)) for i in range(sessions)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    seconds = window["end"] - window["begin"]
    return {"sessions": sessions, "clicks_per_s": round(len(adds) / seconds, 2), "start_session": _stats(starts),
            "add_click": _stats(adds), "add_click_model": _stats(models)}


@app.command()
def main(out: Path = Path("bench/results"), family: str = "sam", variant: str = "vit_b",
         checkpoint: Path = typer.Option(None, exists=True, dir_okay=False),
         sessions: str = "1,8,32", clicks: int = 5, repeats: int = 5, side: int = 480) -> None:
    out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="annot-bench-foundation-"))
    started = time.perf_counter()
    folder, decoder = export(family, variant, checkpoint, work)
    export_s = time.perf_counter() - started
    models = {p.name: p for p in folder.iterdir() if (p / "config.pbtxt").exists()}
    repository = repository_with_candidates(work / "repo", models)
    image = _image(side)
    result: dict = {"family": family, "variant": variant, "weights": "checkpoint" if checkpoint else "random",
                    "image": f"{side}x{side}", "clicks_per_session": clicks, "export_s": round(export_s, 1),
                    "device": "CPU (tritonserver from nvidia-pytriton, Python backend + onnxruntime)"}
    overrides = {"segmentation-foundation": {"segmentation_project_models": {"*": decoder},
                                             "default_deadline_s": 600.0}}
    with LocalStack([], triton_repository=repository, overrides=overrides) as stack:
        model = FoundationModel(stack.settings.triton_grpc_url, decoder, default_timeout_s=600).describe()
        encode_ms, decode_ms = [], []
        features = model.encode(image)  # first call: allocations, not counted
        for _ in range(repeats):
            features = model.encode(image)
            encode_ms.append(features.encode_ms)
        previous, sequence = None, _clicks(repeats + 1, side, 99)
        for i in range(len(sequence)):
            logits, _, ms = model.decode(features, sequence[:i + 1], image.shape[:2], previous)
            previous = logits
            if i:
                decode_ms.append(ms)
        t0 = time.perf_counter()
        model.probability(previous, image.shape[:2])
        result["upsample_ms"] = round((time.perf_counter() - t0) * 1000, 2)
        result["encoder"], result["decoder"] = _stats(encode_ms), _stats(decode_ms)
        result["features_bytes"] = sum(a.nbytes for a in features.arrays.values())
        model.close()
        result["rows"] = [run_sessions(stack, "segmentation-foundation", image, int(s), clicks)
                          for s in sessions.split(",")]
    (out / "foundation_latency.json").write_text(json.dumps(result, indent=1) + "\n")
    lines = [f"# Foundation model latency: {family} {variant} ({result['weights']} weights), {result['device']}", "",
             (f"Encoder (Triton alone) p50 {result['encoder']['p50_ms']} ms; decoder (Triton alone) p50 "
              f"{result['decoder']['p50_ms']} ms; upsampling in the service {result['upsample_ms']} ms; features "
              f"kept per session {result['features_bytes'] / 2**20:.1f} MiB (Redis); export {result['export_s']} s."),
             "",
             ("| sessions | clicks/s | StartSession p50 ms | AddClick p50 ms | AddClick p95 ms "
              "| decoder in AddClick p50 ms |"),
             "|---:|---:|---:|---:|---:|---:|"]
    for row in result["rows"]:
        lines.append(f"| {row['sessions']} | {row['clicks_per_s']} | {row['start_session']['p50_ms']} | "
                     f"{row['add_click']['p50_ms']} | {row['add_click']['p95_ms']} | {row['add_click_model']['p50_ms']} |")
    (out / "foundation_latency.md").write_text("\n".join(lines) + "\n")
    typer.echo("\n".join(lines))


if __name__ == "__main__":
    app()
