"""Foundation models (SAM, SAM 2) a user brings as a checkpoint: exported by the same command a user runs
(``python -m services.segmentation.export_foundation`` in the export venv, ``make sam-setup``), served by the
real tritonserver, used by the real segmentation service. No checkpoint can be downloaded here: the official
architectures are built at random initialisation in a reduced configuration (``--variant test_tiny``, the
packages' own code), saved as a checkpoint file and exported from it. These tests check the serving path and
its contract (the export's own check compares the graphs with the official predictors), not accuracy."""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import grpc
import numpy as np
import pytest
from redis import Redis

from annotation.v1 import common_pb2, segmentation_pb2, segmentation_pb2_grpc
from services.common.clicks import Click
from services.common.images import encode_png
from services.common.keys import KeyStore, Role
from services.common.masks import decode_rle
from services.common.storage import make_engine, make_session_factory, migrate
from services.segmentation.triton_foundation import FoundationModel
from tests.conftest import REPO, Triton, start_service, wait_until

pytestmark = pytest.mark.integration

REQUIREMENTS = REPO / "deploy" / "triton" / "foundation" / "requirements-export.txt"
FAMILIES = {"sam": "samt", "sam2": "sam2t"}  # family -> model name prefix in the test repository

# Run in the export venv: the reduced architectures at random initialisation, saved as the checkpoints a user
# would bring (SAM: a state dict; SAM 2: {"model": state dict}), and one with keys missing.
MAKE_CHECKPOINTS = """
import sys, torch
from services.segmentation.export_foundation import build
out = sys.argv[1]
for family in ("sam", "sam2"):
    torch.manual_seed(0)
    state = build(family, "test_tiny").state_dict()
    torch.save({"model": state} if family == "sam2" else state, f"{out}/{family}.pt")
state = {k: v for k, v in build("sam", "test_tiny").state_dict().items() if not k.startswith("mask_decoder.iou_")}
torch.save(state, f"{out}/sam_missing.pt")
"""


def export_python() -> Path:
    """The export venv's interpreter (Makefile: sam-setup, keyed by the requirements' digest)."""
    if os.environ.get("ANNOT_SAM_PYTHON"):
        return Path(os.environ["ANNOT_SAM_PYTHON"])
    digest = hashlib.sha256(REQUIREMENTS.read_bytes()).hexdigest()[:12]
    return Path.home() / ".cache" / "annotation-platform" / f"venv-sam-{digest}" / "bin" / "python"


def _run(args: list[str], **kwargs) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.Popen(args, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            **kwargs)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """{"repo": model repository, "sam"/"sam2"/"missing": (returncode, stdout, stderr) of the export command}."""
    python = export_python()
    if not python.exists():
        pytest.fail(f"the export venv is missing ({python}): run `make sam-setup` (make test does)")
    work = tmp_path_factory.mktemp("foundation")
    made = _run([str(python), "-c", MAKE_CHECKPOINTS, str(work)])
    out, err = made.communicate(timeout=600)
    assert made.returncode == 0, err[-3000:]
    repo = work / "repo"
    command = [str(python), "-m", "services.segmentation.export_foundation", "--variant", "test_tiny"]
    runs = {family: _run([*command, "--family", family, "--checkpoint", str(work / f"{family}.pt"),
                          "--out", str(repo), "--name", name]) for family, name in FAMILIES.items()}
    runs["missing"] = _run([*command, "--family", "sam", "--checkpoint", str(work / "sam_missing.pt"),
                            "--out", str(work / "refused"), "--no-verify"])
    results = {}
    for key, proc in runs.items():
        out, err = proc.communicate(timeout=900)
        results[key] = (proc.returncode, out, err)
    return {"repo": repo, "work": work, **results}


@pytest.fixture(scope="module")
def triton(exported):
    for family in FAMILIES:
        assert exported[family][0] == 0, exported[family][2][-3000:]
    server = Triton(exported["work"], model_repository=exported["repo"])
    server.start(timeout_s=240)
    yield server
    server.stop()


def inference_counts(server: Triton) -> dict[str, int]:
    """Triton's own count of inferences per model (its metrics endpoint, which may open a moment after Triton
    reports ready: a restarted server is waited for)."""
    def scrape() -> str:
        try:
            return urllib.request.urlopen(f"http://127.0.0.1:{server.metrics_port}/metrics", timeout=5).read().decode()
        except urllib.error.URLError:
            return ""

    text = wait_until(scrape, 30, "Triton's metrics endpoint")
    return {m.group(1): int(float(m.group(2)))
            for m in re.finditer(r'^nv_inference_count\{model="([^"]+)",version="\d+"\} (\S+)$', text, re.MULTILINE)}


def quiet_counts(server: Triton) -> dict[str, int]:
    """Triton's counts once they stop changing: its statistics follow each response by a moment, so a count
    read right after a call may miss that call."""
    last: list[dict] = [inference_counts(server)]

    def unchanged():
        time.sleep(0.5)
        now = inference_counts(server)
        same, last[0] = now == last[0], now
        return now if same else None

    return wait_until(unchanged, 30, "Triton's inference counts settled", interval_s=0)


def _image(height: int = 180, width: int = 240, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 60, (height, width, 3), dtype=np.uint8)
    image[40:140, 60:180] += 150
    return image


def test_the_export_writes_encoder_and_decoder_folders_that_match_the_official_predictors(exported):
    for family, name in FAMILIES.items():
        code, out, err = exported[family]
        assert code == 0, err[-3000:]
        diffs = json.loads(out.split("largest |onnx - official|: ", 1)[1].splitlines()[0])
        assert diffs["LOW_RES_LOGITS"] < 0.02 * max(1.0, diffs["logit_scale"]) and diffs["IOU"] < 0.02
        for part in ("encoder", "decoder"):
            folder = exported["repo"] / f"{name}_{part}"
            cpu, gpu = (folder / "config.pbtxt").read_text(), (folder / "configs" / "gpu.pbtxt").read_text()
            assert f'name: "{name}_{part}"' in cpu and 'backend: "python"' in cpu and "kind: KIND_CPU" in cpu
            assert 'platform: "onnxruntime_onnx"' in gpu and "kind: KIND_GPU" in gpu
            assert "dynamic_batching" in cpu and "dynamic_batching" in gpu
            io = [line for line in cpu.splitlines() if re.match(r"\s*(name|data_type|dims):", line)]
            assert io == [line for line in gpu.splitlines() if re.match(r"\s*(name|data_type|dims):", line)]
            assert (folder / "1" / "model.onnx").stat().st_size > 0 and (folder / "1" / "model.py").exists()
            card = json.loads((folder / "1" / "export.json").read_text())
            assert card["family"] == family and len(card["checkpoint_sha256"]) == 64
        decoder = (exported["repo"] / f"{name}_decoder" / "config.pbtxt").read_text()
        assert '"MASK_INPUT"' in decoder and '"POINT_LABELS"' in decoder and f'string_value: "{name}_encoder"' in decoder
        assert ('"HIGH_RES_0"' in decoder) == (family == "sam2")


def test_a_checkpoint_whose_keys_do_not_match_is_refused_naming_the_missing_keys(exported):
    code, _, err = exported["missing"]
    assert code == 2
    assert "missing keys" in err and "mask_decoder.iou_token.weight" in err
    assert "mask_decoder.iou_prediction_head" in err
    assert not (exported["work"] / "refused").exists() or not any((exported["work"] / "refused").iterdir())


def test_triton_serves_the_pair_with_the_contract_shapes(triton):
    for name in FAMILIES.values():
        model = FoundationModel(triton.grpc_url, f"{name}_decoder", default_timeout_s=120).describe()
        assert model.encoder == f"{name}_encoder"
        assert model.feature_shapes["EMBEDDING"] == (256, 64, 64)
        features = model.encode(_image())
        assert {k: v.shape for k, v in features.arrays.items()} == model.feature_shapes
        assert all(v.dtype == np.float16 for v in features.arrays.values())
        clicks = [Click(120, 90, True), Click(20, 20, False)]
        logits, iou_pred, _ = model.decode(features, clicks, (180, 240), None)
        assert logits.shape == (256, 256) and np.isfinite(iou_pred)
        again, _, _ = model.decode(features, clicks, (180, 240), logits)
        assert not np.allclose(again, logits)  # the previous mask is an input that matters
        prob = model.probability(logits, (180, 240))
        assert prob.shape == (180, 240) and 0 <= prob.min() and prob.max() <= 1
        model.close()


@pytest.mark.parametrize("family", list(FAMILIES))
def test_a_session_encodes_once_decodes_per_click_with_the_previous_mask_and_undo_redo_call_nothing(
        family, triton, settings, spawn):
    name = FAMILIES[family]
    seg = settings.model_copy(update={
        "triton_grpc_url": triton.grpc_url, "triton_http_port": triton.http_port,
        "segmentation_project_models": {"p1": f"{name}_decoder"}, "segmentation_session_ttl_s": 600})
    migrate(seg.resolved_database_url)
    token = KeyStore(make_session_factory(make_engine(seg.resolved_database_url)), 0).create(
        "annotator", Role.ANNOTATOR, ["p1"])[1]
    start_service(spawn, "segmentation", seg)
    auth = [("authorization", f"Bearer {token}")]
    image = _image()
    encoder, decoder = f"{name}_encoder", f"{name}_decoder"
    with grpc.insecure_channel(seg.service_address("segmentation")) as channel:
        stub = segmentation_pb2_grpc.SegmentationStub(channel)
        before = quiet_counts(triton)
        sid = stub.StartSession(segmentation_pb2.StartSessionRequest(project_id="p1", image_data=encode_png(image)),
                                metadata=auth, timeout=120).session.session_id
        after_start = quiet_counts(triton)
        assert after_start.get(encoder, 0) - before.get(encoder, 0) == 1
        assert after_start.get(decoder, 0) == before.get(decoder, 0)
        redis = Redis.from_url(seg.redis_url)
        kept = redis.hgetall(f"seg:{sid}:feat")
        assert len(kept[b"EMBEDDING"]) == 256 * 64 * 64 * 2  # float16

        clicks = [Click(120, 90, True), Click(20, 20, False), Click(150, 100, True)]
        masks = []
        for click in clicks:
            reply = stub.AddClick(segmentation_pb2.AddClickRequest(
                project_id="p1", session_id=sid, click=common_pb2.Click(x=click.x, y=click.y, positive=click.positive)),
                metadata=auth, timeout=60)
            masks.append(decode_rle(reply.update.mask.size, reply.update.mask.counts, image.shape[:2], "mask"))
            assert reply.update.model_latency_ms > 0
            assert reply.update.model_version == f"{decoder}:1+{encoder}:1"
        after_clicks = quiet_counts(triton)
        assert after_clicks[encoder] == after_start[encoder]  # never again after StartSession
        assert after_clicks[decoder] - after_start.get(decoder, 0) == len(clicks)

        # The service's masks are the decoder's with the previous step's logits as MASK_INPUT.
        model = FoundationModel(triton.grpc_url, decoder, default_timeout_s=120).describe()
        features = model.encode(image)
        previous, with_prev, without_prev = None, [], []
        for i in range(len(clicks)):
            logits, _, _ = model.decode(features, clicks[:i + 1], image.shape[:2], previous)
            fresh, _, _ = model.decode(features, clicks[:i + 1], image.shape[:2], None)
            with_prev.append(model.probability(logits, image.shape[:2]) > seg.segmentation_threshold)
            without_prev.append(model.probability(fresh, image.shape[:2]) > seg.segmentation_threshold)
            previous = logits
        for i, mask in enumerate(masks):
            assert (mask == with_prev[i]).mean() > 0.999
        assert any((mask != fresh).sum() > 0 for mask, fresh in zip(masks[1:], without_prev[1:]))
        model.close()

        counted = quiet_counts(triton)
        undo = stub.Undo(segmentation_pb2.UndoRequest(project_id="p1", session_id=sid), metadata=auth, timeout=30)
        assert (decode_rle(undo.update.mask.size, undo.update.mask.counts, image.shape[:2], "mask") == masks[1]).all()
        redo = stub.Redo(segmentation_pb2.RedoRequest(project_id="p1", session_id=sid), metadata=auth, timeout=30)
        assert (decode_rle(redo.update.mask.size, redo.update.mask.counts, image.shape[:2], "mask") == masks[2]).all()
        assert undo.update.model_latency_ms == 0 and redo.update.model_latency_ms == 0
        assert undo.update.model_version == redo.update.model_version == f"{decoder}:1+{encoder}:1"
        assert quiet_counts(triton) == counted  # no model call for undo or redo

        # After an undo, a new click continues from the kept step's logits (the undone one's are dropped).
        stub.Undo(segmentation_pb2.UndoRequest(project_id="p1", session_id=sid), metadata=auth, timeout=30)
        stub.AddClick(segmentation_pb2.AddClickRequest(
            project_id="p1", session_id=sid, click=common_pb2.Click(x=30, y=150, positive=False)),
            metadata=auth, timeout=60)
        assert redis.llen(f"seg:{sid}:logits") == 3
        assert quiet_counts(triton)[encoder] == counted[encoder]  # (the test encoded once itself above)
        stub.FinishSession(segmentation_pb2.FinishSessionRequest(project_id="p1", session_id=sid),
                           metadata=auth, timeout=30)
        assert not redis.exists(f"seg:{sid}:feat")  # a finished session keeps masks, not features


def test_a_session_started_while_triton_is_down_encodes_at_its_first_click(triton, settings, spawn):
    """StartSession never needed Triton (a click network's session keeps only the pixels); a foundation
    project's session started during an outage is encoded at its first click instead."""
    name = FAMILIES["sam"]
    encoder, decoder = f"{name}_encoder", f"{name}_decoder"
    seg = settings.model_copy(update={"triton_grpc_url": triton.grpc_url, "triton_http_port": triton.http_port,
                                      "segmentation_project_models": {"p1": decoder}})
    migrate(seg.resolved_database_url)
    token = KeyStore(make_session_factory(make_engine(seg.resolved_database_url)), 0).create(
        "annotator", Role.ANNOTATOR, ["p1"])[1]
    start_service(spawn, "segmentation", seg)
    auth = [("authorization", f"Bearer {token}")]
    with grpc.insecure_channel(seg.service_address("segmentation")) as channel:
        stub = segmentation_pb2_grpc.SegmentationStub(channel)
        triton.stop()
        try:
            sid = stub.StartSession(segmentation_pb2.StartSessionRequest(
                project_id="p1", image_data=encode_png(_image())), metadata=auth, timeout=30).session.session_id
        finally:
            triton.start(timeout_s=240)
        before = quiet_counts(triton)
        reply = stub.AddClick(segmentation_pb2.AddClickRequest(
            project_id="p1", session_id=sid, click=common_pb2.Click(x=120, y=90, positive=True)),
            metadata=auth, timeout=120)
        assert reply.update.model_version == f"{decoder}:1+{encoder}:1"
        after = quiet_counts(triton)
        assert after[encoder] - before.get(encoder, 0) == 1 and after[decoder] - before.get(decoder, 0) == 1
        assert Redis.from_url(seg.redis_url).exists(f"seg:{sid}:feat")
