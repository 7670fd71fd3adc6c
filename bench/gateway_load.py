"""Load test of the gateway: N simulated annotators (asyncio + httpx on loopback) click through
sessions over REST, concurrently: next question -> start session -> clicks -> submit.

Reports p50/p95 per click (client round trip through the gateway, and Triton's share), errors, and
checks that nothing was lost: every submitted session is in the COCO export with all its clicks.
By default it starts a private stack (redis, the real tritonserver, the segmentation server, the
gateway) on free ports; ``--url/--key`` drive a running platform instead.

    python -m bench.gateway_load --out bench/results
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import typer
from PIL import Image

from services.common.settings import REPO_ROOT
from services.simulation.stack import LocalStack, _wait, free_port

app = typer.Typer(add_completion=False)
LONG_SIDE = 256
PROJECT = "load"


def _images(count: int) -> list[tuple[str, bytes]]:
    """``count`` distinct small photos: crops of scikit-image's samples, resized to 256 px."""
    from skimage import data  # noqa: PLC0415

    samples = [np.asarray(getattr(data, name)()) for name in ("coffee", "chelsea", "astronaut", "rocket")]
    files = []
    for i in range(count):
        image = samples[i % len(samples)]
        h, w = image.shape[:2]
        dy, dx = (i // len(samples)) % 7 * h // 40, (i // len(samples)) // 7 * w // 40
        crop = Image.fromarray(image[dy:h - (6 * h // 40 - dy), dx:w - (6 * w // 40 - dx)]).convert("RGB")
        crop.thumbnail((LONG_SIDE, LONG_SIDE))
        buffer = io.BytesIO()
        crop.save(buffer, format="JPEG", quality=90)
        files.append((f"load-{i:04d}.jpg", buffer.getvalue()))
    return files


def _pct(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else 0.0


async def _annotator(http: httpx.AsyncClient, index: int, sessions: int, clicks: int, out: dict) -> None:
    base = f"/v1/projects/{PROJECT}"
    for _ in range(sessions):
        try:
            question = (await _post(http, f"{base}/questions/next", {}, out)).json()
            if question["exhausted"]:
                out["exhausted"] += 1
                return
            width, height = question["image"]["width"], question["image"]["height"]
            session = (await _post(http, f"{base}/sessions", {"task_id": question["task"]["task_id"]}, out)).json()
            sid = session["session_id"]
            points = [(0.5, 0.5, True), (0.05, 0.05, False), (0.45, 0.6, True), (0.95, 0.9, False)]
            for k in range(clicks):
                fx, fy, positive = points[k % len(points)]
                start = time.perf_counter()
                reply = await _post(http, f"{base}/sessions/{sid}/clicks",
                                    {"x": fx * (width - 1), "y": fy * (height - 1), "positive": positive,
                                     "t_ms": 700 * (k + 1)}, out)
                out["click_ms"].append((time.perf_counter() - start) * 1000)
                out["model_ms"].append(reply.json()["model_latency_ms"])
            await _post(http, f"{base}/sessions/{sid}/finish", {"outcome": "submitted", "label": "object"}, out)
            out["submitted"][sid] = clicks
        except RequestFailed:
            continue  # counted; the next session starts afresh


class RequestFailed(Exception):
    pass


async def _post(http: httpx.AsyncClient, path: str, body: dict, out: dict) -> httpx.Response:
    try:
        reply = await http.post(path, json=body)
    except httpx.HTTPError as exc:
        out["errors"].append(f"{path.rsplit('/', 1)[-1]}: {type(exc).__name__}")
        raise RequestFailed from exc
    if reply.status_code >= 400:
        out["errors"].append(f"{path.rsplit('/', 1)[-1]}: {reply.status_code} {reply.text[:160]}")
        raise RequestFailed
    return reply


async def _run(url: str, key: str, annotators: int, sessions: int, clicks: int) -> dict:
    out = {"click_ms": [], "model_ms": [], "errors": [], "submitted": {}, "exhausted": 0}
    limits = httpx.Limits(max_connections=annotators, max_keepalive_connections=annotators)
    async with httpx.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=120,
                                 limits=limits) as http:
        # one key per annotator, so the per-key rate limit and the task assignment are per person
        keys = []
        for i in range(annotators):
            reply = await http.post("/v1/keys", json={"name": f"load-{i}", "role": "annotator", "projects": [PROJECT]})
            reply.raise_for_status()
            keys.append(reply.json()["key"])
        started = time.perf_counter()
        clients = [httpx.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {k}"}, timeout=120) for k in keys]
        try:
            await asyncio.gather(*(_annotator(c, i, sessions, clicks, out) for i, c in enumerate(clients)))
        finally:
            for c in clients:
                await c.aclose()
        out["seconds"] = time.perf_counter() - started
        coco = (await http.get(f"/v1/projects/{PROJECT}/exports/coco")).json()
    stored = {a["attributes"]["session_id"]: a["attributes"]["click_count"] for a in coco["annotations"]}
    out["lost"] = [sid for sid, n in out["submitted"].items() if stored.get(sid) != n]
    return out


def _prepare(url: str, key: str, images: int) -> None:
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=120) as http:
        reply = http.post("/v1/projects", json={"project_id": PROJECT, "labels": ["object"]})
        if reply.status_code not in (201, 409):
            raise RuntimeError(reply.text)
        files = _images(images)
        for start in range(0, len(files), 20):
            part = [("files", (n, d, "image/jpeg")) for n, d in files[start:start + 20]]
            http.post(f"/v1/projects/{PROJECT}/images", files=part).raise_for_status()


def _report(result: dict, params: dict, out_dir: Path) -> dict:
    clicks = result["click_ms"]
    summary = {
        **params, "seconds": round(result["seconds"], 2), "sessions_submitted": len(result["submitted"]),
        "clicks": len(clicks), "clicks_per_s": round(len(clicks) / result["seconds"], 2) if result["seconds"] else 0,
        "click_ms": {"p50": round(_pct(clicks, 50), 1), "p95": round(_pct(clicks, 95), 1),
                     "max": round(max(clicks, default=0), 1), "mean": round(statistics.fmean(clicks), 1) if clicks else 0},
        "triton_ms": {"p50": round(_pct(result["model_ms"], 50), 1), "p95": round(_pct(result["model_ms"], 95), 1)},
        "errors": len(result["errors"]), "error_samples": result["errors"][:10],
        "lost_sessions": len(result["lost"]), "exhausted_annotators": result["exhausted"],
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "gateway_load.json").write_text(json.dumps(summary, indent=2))
    (out_dir / "gateway_load.md").write_text("\n".join([
        "# Gateway load test", "",
        f"{params['annotators']} simulated annotators over REST on loopback, {params['sessions_per_annotator']} "
        f"sessions each, {params['clicks_per_session']} clicks per session, {params['images']} images of {LONG_SIDE} px; the real "
        "segmentation service and tritonserver (CPU) behind the gateway. Times hold for this machine only.", "",
        "| sessions | clicks | clicks/s | click p50 | click p95 | click max | Triton p50 | Triton p95 | errors | lost |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
        f"| {summary['sessions_submitted']} | {summary['clicks']} | {summary['clicks_per_s']} | "
        f"{summary['click_ms']['p50']} ms | {summary['click_ms']['p95']} ms | {summary['click_ms']['max']} ms | "
        f"{summary['triton_ms']['p50']} ms | {summary['triton_ms']['p95']} ms | {summary['errors']} | "
        f"{summary['lost_sessions']} |", ""]))
    return summary


@app.command()
def main(out: Path = typer.Option(REPO_ROOT / "bench" / "results", help="Folder for the JSON and the report."),
         annotators: int = typer.Option(50, min=1), sessions: int = typer.Option(2, min=1),
         clicks: int = typer.Option(3, min=1), url: str = typer.Option("", help="A running gateway; empty: private stack."),
         key: str = typer.Option("", envvar="ANNOT_API_KEY", help="Admin key of the running gateway.")) -> None:
    params = {"annotators": annotators, "sessions_per_annotator": sessions, "clicks_per_session": clicks,
              "images": annotators * sessions + 10}
    if url:
        _prepare(url, key, params["images"])
        summary = _report(asyncio.run(_run(url, key, annotators, sessions, clicks)), params, out)
    else:
        with LocalStack(["segmentation"]) as stack:
            port = free_port()
            settings = stack.settings.model_copy(update={
                "gateway_port": port, "service_hosts": {"segmentation": stack.addresses["segmentation"]}})
            env = {**os.environ, **settings.to_env(), "ANNOT_GATEWAY_RATE_PER_S": "1000",
                   "ANNOT_GATEWAY_RATE_BURST": "1000", "ANNOT_GATEWAY_FALLBACK_TIMEOUT_S": "0.5"}
            log = stack.dir / "gateway.log"
            with log.open("wb") as sink:
                gateway = subprocess.Popen([sys.executable, "-m", "services.gateway"], cwd=REPO_ROOT, env=env,
                                           stdout=sink, stderr=subprocess.STDOUT, start_new_session=True)
            try:
                url = f"http://127.0.0.1:{port}"
                _wait(lambda: _up(url), 60, "gateway", log)
                _prepare(url, stack.token, params["images"])
                summary = _report(asyncio.run(_run(url, stack.token, annotators, sessions, clicks)), params, out)
            finally:
                os.killpg(gateway.pid, signal.SIGTERM)
                gateway.wait(30)
    print(json.dumps(summary, indent=2))
    if summary["lost_sessions"] or summary["errors"]:
        raise typer.Exit(1)


def _up(url: str) -> bool:
    try:
        return httpx.get(url + "/openapi.json", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


if __name__ == "__main__":
    app()
