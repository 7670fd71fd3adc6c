"""Tiny images (1x1 up to a few pixels a side) through every click path.

Found by a hostile tester: AddClick on 1x1, 2x2, 3x3 and 8x8 images answered 500 and gRPC Predict
INTERNAL, from OpenCV GrabCut asserting that both sides of the cut have colour samples. Every size the
decoder accepts must work: a mask of the image's size, never an error.
"""

from __future__ import annotations

import io
import json

import grpc
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from annotation.v1 import common_pb2, segmentation_pb2, segmentation_pb2_grpc
from services.common.clicks import Click
from services.common.keys import KeyStore, Role
from services.common.masks import decode_rle
from services.common.storage import make_engine, make_session_factory, migrate
from services.models.click_predictor import EncodingConfig, Predictor, torch_network
from services.models import grabcut
from services.segmentation.export import MODEL_DIR
from tests.conftest import start_service

SIZES = [(1, 1), (2, 2), (3, 3), (8, 8), (1, 40), (40, 1), (5, 3)]


@st.composite
def image_and_clicks(draw):
    height, width = draw(st.integers(1, 24)), draw(st.integers(1, 24))
    seed = draw(st.integers(0, 2**16))
    clicks = draw(st.lists(st.builds(Click, st.integers(0, width - 1), st.integers(0, height - 1), st.booleans()),
                           min_size=1, max_size=4))
    image = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    return image, clicks


@pytest.fixture(scope="module")
def shipped_predictor() -> Predictor:
    import torch  # noqa: PLC0415

    torch.set_num_threads(1)
    config = json.loads((MODEL_DIR / "1" / "training.json").read_text())["config"]
    network = torch_network(torch.jit.load(str(MODEL_DIR / "1" / "model.pt")).eval())
    return Predictor(network, EncodingConfig(config["size"], config["radius"], config["in_channels"] == 7),
                     refine=grabcut.refine)


@pytest.mark.unit
@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(case=image_and_clicks())
def test_every_size_and_click_gives_a_mask_of_the_image(case, shipped_predictor):
    image, clicks = case
    shape = image.shape[:2]
    for prob in (grabcut.grabcut(image, clicks), shipped_predictor.predict(image, clicks, None),
                 grabcut.refine(image, np.random.default_rng(0).random(shape, dtype=np.float32), clicks)):
        assert prob.shape == shape and np.isfinite(prob).all() and prob.min() >= 0 and prob.max() <= 1


def _png(height: int, width: int) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(height * 100 + width).integers(0, 256, (height, width, 3), np.uint8)).save(
        buffer, format="PNG")
    return buffer.getvalue()


@pytest.mark.integration
def test_tiny_images_through_the_real_service(settings, triton_server, spawn):
    seg = settings.model_copy(update={"triton_grpc_url": triton_server.grpc_url,
                                      "triton_http_port": triton_server.http_port})
    migrate(seg.resolved_database_url)
    token = KeyStore(make_session_factory(make_engine(seg.resolved_database_url)), 0).create(
        "annotator", Role.ANNOTATOR, ["p1"])[1]
    metadata = [("authorization", f"Bearer {token}")]
    start_service(spawn, "segmentation", seg)
    with grpc.insecure_channel(seg.service_address("segmentation")) as channel:
        stub = segmentation_pb2_grpc.SegmentationStub(channel)
        for height, width in SIZES:
            corner = common_pb2.Click(x=width - 1, y=height - 1, positive=True)
            reply = stub.Predict(segmentation_pb2.PredictRequest(
                project_id="p1", image_data=_png(height, width), clicks=[corner]), metadata=metadata, timeout=30)
            assert decode_rle(reply.mask.size, reply.mask.counts, (height, width), "mask").shape == (height, width)
            session = stub.StartSession(segmentation_pb2.StartSessionRequest(
                project_id="p1", image_data=_png(height, width)), metadata=metadata, timeout=30)
            for click in (corner, common_pb2.Click(x=0, y=0, positive=False)):
                step = stub.AddClick(segmentation_pb2.AddClickRequest(
                    project_id="p1", session_id=session.session.session_id, click=click), metadata=metadata, timeout=30)
                assert list(step.update.mask.size) == [height, width], (height, width)
