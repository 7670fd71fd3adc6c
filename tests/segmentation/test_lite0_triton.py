"""The pretrained click network's Triton model (``clickseg_lite0``): its whole per-click pipeline runs in
the real tritonserver, the service only sends image, clicks and previous map. The weights here are the
ImageNet encoder with an untrained decoder: these tests check the serving path, not accuracy. As shipped
(no refinement) it is compared exactly with the in-process TorchScript; ``clickseg_lite0_grabcut`` is the
same model with the GrabCut refinement on, which also runs inside Triton."""

from __future__ import annotations

import shutil
import threading

import grpc
import numpy as np
import pytest
import torch

from annotation.v1 import common_pb2, segmentation_pb2, segmentation_pb2_grpc
from services.common.clicks import Click
from services.common.errors import DomainError, Unavailable
from services.common.keys import KeyStore, Role
from services.common.masks import decode_rle
from services.common.storage import make_engine, make_session_factory, migrate
from services.models import click_pipeline, grabcut
from services.models.click_models import build
from services.models.click_predictor import EncodingConfig, Predictor
from services.models.click_repository import set_parameter
from services.segmentation.export import lite0_model_dir, repository_with_candidates
from services.segmentation.triton_client import TritonNetwork
from tests.conftest import Triton, start_service

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def lite0(tmp_path_factory):
    """(tritonserver with the served models + clickseg_lite0 of known weights as shipped (no refinement,
    network passes on ONNX Runtime) and variants of it, {name: the TorchScript whose answers it should give}).
    Variants: ``_grabcut`` (GrabCut refinement on), ``_torch`` (network passes in torch, as on a GPU),
    ``_swapped`` (model.onnx of another network beside the same model.pt)."""
    work = tmp_path_factory.mktemp("lite0")
    folder = work / "clickseg_lite0"
    shutil.copytree(lite0_model_dir(), folder,
                    ignore=shutil.ignore_patterns("model.pt", "model.onnx", "training.json"))
    shipped = (folder / "config.pbtxt").read_text()
    assert 'key: "refine" value: { string_value: "none" }' in shipped
    assert 'key: "network_runtime" value: { string_value: "onnxruntime" }' in shipped

    def export(seed: int, target):
        torch.manual_seed(seed)
        net = build({"arch": "effnet_lite0"})
        torch.nn.init.normal_(net.maps_stem[2].weight, std=0.05)  # the clicks must matter
        return click_pipeline.export(click_pipeline.from_config(net, {"size": 256}), target)

    path = export(0, folder / "1" / "model.pt")
    assert click_pipeline.network_onnx_path(path).is_file()
    other = export(1, work / "other" / "model.pt")
    models = {"clickseg_lite0": folder}
    for suffix, key, value in (("grabcut", "refine", "grabcut"), ("torch", "network_runtime", "torch"),
                               ("swapped", "refine", "none")):
        name = f"clickseg_lite0_{suffix}"
        shutil.copytree(folder, work / name)
        config = (work / name / "config.pbtxt").read_text().replace('name: "clickseg_lite0"', f'name: "{name}"')
        (work / name / "config.pbtxt").write_text(set_parameter(config, key, value))
        models[name] = work / name
    shutil.copy(click_pipeline.network_onnx_path(other), work / "clickseg_lite0_swapped" / "1" / "model.onnx")
    server = Triton(work, model_repository=repository_with_candidates(work / "repo", models))
    server.start()
    scripted = torch.jit.load(str(path)).eval()
    yield server, scripted, {"clickseg_lite0": scripted, "clickseg_lite0_torch": scripted,
                             "clickseg_lite0_swapped": torch.jit.load(str(other)).eval()}
    server.stop()


def _image(height: int = 180, width: int = 240, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 60, (height, width, 3), dtype=np.uint8)
    image[40:140, 60:180] += 150
    return image


def test_triton_runs_the_same_pipeline_as_in_process(lite0):
    server, scripted, _ = lite0
    network = TritonNetwork(server.grpc_url, "clickseg_lite0")
    encoding = network.encoding()
    assert encoding.pipeline and encoding.size == 256 and not encoding.with_prior
    image = _image()
    clicks = [Click(120, 90, True), Click(20, 20, False)]
    prev = np.zeros(image.shape[:2], np.float32)
    prev[50:130, 70:170] = 200 / 255  # exactly representable as the uint8 that travels
    got, network_prob = network.segment(image, clicks, prev)
    expected = click_pipeline.segmenter(scripted, image)(clicks, prev)
    assert got.shape == image.shape[:2] and got.dtype == np.float32
    assert np.allclose(got, expected, atol=1e-4) and np.array_equal(network_prob, got)  # no refinement
    first, _ = network.segment(image, clicks[:1], None)
    assert np.allclose(first, click_pipeline.segmenter(scripted, image)(clicks[:1], None), atol=1e-4)
    network.close()


@pytest.mark.parametrize("name", ["clickseg_lite0", "clickseg_lite0_torch", "clickseg_lite0_swapped"])
def test_the_network_passes_run_on_the_configured_runtime(lite0, name):
    """ONNX Runtime runs the network from model.onnx (a swapped graph changes the answer to that
    network's), torch from model.pt; the pipeline around it is the same."""
    server, scripted, expected_by = lite0
    network = TritonNetwork(server.grpc_url, name)
    image = _image()
    clicks = [Click(120, 90, True), Click(20, 20, False)]
    got, _ = network.segment(image, clicks, None)
    expected = click_pipeline.segmenter(expected_by[name], image)(clicks, None)
    assert np.allclose(got, expected, atol=1e-4)
    if name.endswith("swapped"):
        assert not np.allclose(got, click_pipeline.segmenter(scripted, image)(clicks, None), atol=0.01)
    network.close()


def test_concurrent_requests_of_different_sizes_batch_and_come_back_to_their_senders(lite0):
    server, scripted, _ = lite0
    network = TritonNetwork(server.grpc_url, "clickseg_lite0")
    shapes = [(120, 200), (180, 240), (64, 64), (200, 90)] * 2
    results: dict[int, np.ndarray] = {}

    def run(i: int) -> None:
        h, w = shapes[i]
        results[i] = network.segment(_image(h, w, seed=i), [Click(w // 2, h // 2, True)], None)[0]

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(shapes))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for i, (h, w) in enumerate(shapes):
        expected = click_pipeline.segmenter(scripted, _image(h, w, seed=i))([Click(w // 2, h // 2, True)], None)
        assert results[i].shape == (h, w)
        assert np.allclose(results[i], expected, atol=1e-4)
    network.close()


def test_the_grabcut_variant_refines_inside_triton(lite0):
    server, scripted, _ = lite0
    network = TritonNetwork(server.grpc_url, "clickseg_lite0_grabcut")
    image = _image()
    clicks = [Click(120, 90, True), Click(20, 20, False)]
    got, network_prob = network.segment(image, clicks, None)
    prob = click_pipeline.segmenter(scripted, image)(clicks, None)
    expected = grabcut.refine(image, prob, clicks)
    # NET_PROB is the network's own map before the cut (what the service reads confidence off)
    assert np.allclose(network_prob, prob, atol=1e-4) and not np.allclose(network_prob, got, atol=0.1)
    # GrabCut's cut, not the network's map: a 0/1 mask that differs from the map's threshold somewhere
    assert set(np.unique(got)) <= {0.0, 1.0}
    assert ((got > 0.5) != (prob > 0.5)).sum() > 0
    # Triton's OpenCV (4.10, beside numpy 1.x) and the service's (5.0) may cut a few pixels differently
    assert ((got > 0.5) == (expected > 0.5)).mean() > 0.995
    network.close()


def test_bad_requests_are_refused_naming_the_input(lite0):
    server, _, _ = lite0
    network = TritonNetwork(server.grpc_url, "clickseg_lite0")
    with pytest.raises(DomainError, match="CLICKS") as exc:
        network.segment(_image(), [Click(500, 10, True)], None)
    assert not isinstance(exc.value, Unavailable)
    with pytest.raises(DomainError, match="PREV"):
        network.segment(_image(), [Click(5, 5, True)], np.zeros((10, 10), np.float32))
    with pytest.raises(DomainError, match="IMAGE"):
        network.segment(_image(8, 8)[..., :2], [Click(1, 1, True)], None)  # two channels
    network.close()


def test_the_service_on_the_pretrained_model_calls_triton_and_refines_nothing_itself(lite0, settings, spawn):
    server, scripted, _ = lite0
    seg_settings = settings.model_copy(update={
        "triton_grpc_url": server.grpc_url, "triton_http_port": server.http_port,
        "triton_model_name": "clickseg_lite0", "segmentation_refine": True})
    migrate(seg_settings.resolved_database_url)
    token = KeyStore(make_session_factory(make_engine(seg_settings.resolved_database_url)), 0).create(
        "annotator", Role.ANNOTATOR, ["p1"])[1]
    start_service(spawn, "segmentation", seg_settings)
    image = _image()
    from services.common.images import encode_png

    auth = [("authorization", f"Bearer {token}")]
    with grpc.insecure_channel(seg_settings.service_address("segmentation")) as channel:
        stub = segmentation_pb2_grpc.SegmentationStub(channel)
        sid = stub.StartSession(segmentation_pb2.StartSessionRequest(
            project_id="p1", image_data=encode_png(image)), metadata=auth, timeout=60).session.session_id
        clicks = [Click(120, 90, True), Click(20, 20, False)]
        prev = None
        segment = click_pipeline.segmenter(scripted, image)
        for i, click in enumerate(clicks):
            reply = stub.AddClick(segmentation_pb2.AddClickRequest(
                project_id="p1", session_id=sid, click=common_pb2.Click(x=click.x, y=click.y,
                                                                         positive=click.positive)),
                metadata=auth, timeout=60)
            mask = decode_rle(reply.update.mask.size, reply.update.mask.counts, image.shape[:2], "mask")
            # The session keeps the map as uint8; the pipeline gets it back so.
            prob = segment(clicks[:i + 1], prev)
            prev = np.rint(prob * 255) / 255
            # GrabCut (refinement on in these settings) would not leave the network's mask as it is.
            assert (mask == (prob > 0.5)).mean() > 0.999
        info = stub.GetModelInfo(segmentation_pb2.SegmentationGetModelInfoRequest(), metadata=auth, timeout=30)
        assert info.model_name == "clickseg_lite0" and info.input_long_side_px == 256


@pytest.mark.unit
def test_a_pipeline_model_never_gets_a_service_side_refiner():
    def refine(*_):
        raise AssertionError("refinement ran in the service")

    class Network:
        def segment(self, image, clicks, prev):
            return np.ones(image.shape[:2], np.float32), np.full(image.shape[:2], 0.7, np.float32)

    predictor = Predictor(Network(), EncodingConfig(size=256, with_prior=False, pipeline=True), refine=refine)
    timings: dict = {}
    prob, raw = predictor.predict_with_network(np.zeros((20, 30, 3), np.uint8), [Click(1, 1, True)], None, timings)
    assert prob.shape == (20, 30) and (prob == 1).all() and (raw == 0.7).all() and timings["model_ms"] >= 0
