"""A box as the first input of an object (Segmentation.AddBox), as clients meet it: a real server process, real
Redis, the real tritonserver running the shipped click network on CPU (and, for the foundation models, the
reduced SAM / SAM 2 that test_foundation exports and serves).

The image holds two real objects side by side (two GrabCut photos with their ground truth): a box around one
must give a mask over that one, inside its box, whatever the other; undo and redo treat the box as a step; a
click after it corrects the mask; a bad box is refused naming its field and changes nothing."""

from __future__ import annotations

import cv2
import grpc
import numpy as np
import pytest
from PIL import Image

from annotation.v1 import common_pb2, segmentation_pb2, segmentation_pb2_grpc
from services.common.clicks import Click
from services.common.images import encode_png
from services.common.keys import KeyStore, Role
from services.common.masks import decode_rle, iou
from services.common.storage import make_engine, make_session_factory, migrate
from services.models import box_prompt
from services.models.clicker import Clicker
from services.segmentation.triton_foundation import FoundationModel
from tests.conftest import SHARED_DATA, start_service
from tests.segmentation import test_foundation, test_service

# the service under test, as test_service starts it (fixtures: settings on the session Triton, a key, a stub)
seg_settings, token, stub, call = test_service.seg_settings, test_service.token, test_service.stub, test_service.call
error_of = test_service.error_of

pytestmark = pytest.mark.integration

GRABCUT = SHARED_DATA / "grabcut"
LEFT, RIGHT = "189080", "21077"  # a box around each gives IoU 0.93 / 0.86 with the shipped network


def _photo(name: str, height: int = 240) -> tuple[np.ndarray, np.ndarray]:
    image = np.asarray(Image.open(GRABCUT / "images" / f"{name}.jpg").convert("RGB"))
    gt = np.asarray(Image.open(GRABCUT / "masks" / f"{name}.png"))
    gt = gt[..., 0] if gt.ndim == 3 else gt
    width = round(image.shape[1] * height / image.shape[0])
    return (cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA),
            cv2.resize(gt, (width, height), interpolation=cv2.INTER_NEAREST) > 128)


@pytest.fixture(scope="module")
def scene() -> dict:
    """Two objects side by side: the image, each object's mask and its tight box (x, y, w, h)."""
    (left, gt_left), (right, gt_right) = _photo(LEFT), _photo(RIGHT)
    image = np.concatenate([left, right], 1)
    objects = {}
    for name, gt, x0 in (("A", gt_left, 0), ("B", gt_right, left.shape[1])):
        mask = np.zeros(image.shape[:2], bool)
        mask[:, x0:x0 + gt.shape[1]] = gt
        ys, xs = np.nonzero(mask)
        objects[name] = {"gt": mask, "box": (int(xs.min()), int(ys.min()), int(xs.max() - xs.min() + 1),
                                             int(ys.max() - ys.min() + 1))}
    return {"image": image, "data": encode_png(image), **objects}


def _mask(update, shape) -> np.ndarray:
    return decode_rle(update.mask.size, update.mask.counts, shape, "mask")


def _inside(box, shape) -> np.ndarray:
    x, y, w, h = box
    region = np.zeros(shape, bool)
    region[y:y + h, x:x + w] = True
    return region


def _start(call, scene) -> str:
    return call("StartSession", segmentation_pb2.StartSessionRequest(
        project_id="p1", image_data=scene["data"])).session.session_id


def _box(call, sid: str, box, t_ms: int = 0) -> segmentation_pb2.AddBoxResponse:
    x, y, w, h = box
    return call("AddBox", segmentation_pb2.AddBoxRequest(
        project_id="p1", session_id=sid, box=common_pb2.Box(x=x, y=y, width=w, height=h), t_ms=t_ms), timeout=60)


def test_a_box_around_an_object_gives_a_mask_over_that_object_inside_the_box(call, scene):
    shape = scene["image"].shape[:2]
    masks = {}
    for name, other in (("A", "B"), ("B", "A")):
        sid = _start(call, scene)
        reply = _box(call, sid, scene[name]["box"], t_ms=1200)
        mask = _mask(reply.update, shape)
        masks[name] = mask
        assert mask.sum() > 0
        assert not (mask & ~_inside(scene[name]["box"], shape)).any()  # outside the box is background
        assert iou(mask, scene[name]["gt"]) > 0.7, (name, iou(mask, scene[name]["gt"]))
        assert not (mask & scene[other]["gt"]).any()
        # the box is the session's first step; its centre is the first click
        x, y, w, h = scene[name]["box"]
        assert (reply.box.x, reply.box.y, reply.box.width, reply.box.height) == (x, y, w, h)
        centre = box_prompt.centre_click(box_prompt.Box.from_xywh(scene[name]["box"]), shape)
        assert (reply.click.x, reply.click.y, reply.click.positive, reply.click.index, reply.click.t_ms) == (
            centre.x, centre.y, True, 0, 1200)
        assert reply.update.click_count == 1 and reply.update.model_latency_ms > 0
        session = call("GetSession", segmentation_pb2.SegmentationGetSessionRequest(project_id="p1", session_id=sid)).session
        assert session.HasField("box") and session.box.width == w and len(session.clicks) == 1
        assert (_mask(session, shape) == mask).all()
    assert iou(masks["A"], masks["B"]) == 0


def test_undo_and_redo_cover_the_box_and_clicks_correct_it(call, scene):
    shape = scene["image"].shape[:2]
    sid = _start(call, scene)
    boxed = _mask(_box(call, sid, scene["A"]["box"]).update, shape)
    # a box after a click is refused (a box is the first input of an object), and changes nothing
    clicker = Clicker(scene["A"]["gt"])
    fix = clicker.next_click(boxed)
    assert fix is not None
    corrected = call("AddClick", segmentation_pb2.AddClickRequest(
        project_id="p1", session_id=sid, click=common_pb2.Click(x=fix.x, y=fix.y, positive=fix.positive)), timeout=60)
    after = _mask(corrected.update, shape)
    assert corrected.click.index == 1 and corrected.update.click_count == 2
    assert (after != boxed).sum() > 20  # the click corrected the box's mask
    assert not (after & ~_inside(scene["A"]["box"], shape)).any()  # the box still bounds the object
    with pytest.raises(grpc.RpcError) as refused:
        _box(call, sid, scene["B"]["box"])
    code, message, fields = error_of(refused)
    assert code == grpc.StatusCode.INVALID_ARGUMENT and fields == ["box"] and "first input" in message

    undo = call("Undo", segmentation_pb2.UndoRequest(project_id="p1", session_id=sid))
    assert not undo.HasField("undone_box") and (_mask(undo.update, shape) == boxed).all()
    undo = call("Undo", segmentation_pb2.UndoRequest(project_id="p1", session_id=sid))
    assert undo.HasField("undone_box") and undo.undone_box.width == scene["A"]["box"][2]
    assert _mask(undo.update, shape).sum() == 0 and undo.update.click_count == 0 and undo.update.redo_depth == 2
    session = call("GetSession", segmentation_pb2.SegmentationGetSessionRequest(project_id="p1", session_id=sid)).session
    assert not session.HasField("box") and not session.clicks
    redo = call("Redo", segmentation_pb2.RedoRequest(project_id="p1", session_id=sid))
    assert redo.HasField("redone_box") and (_mask(redo.update, shape) == boxed).all()
    assert redo.update.model_latency_ms == 0  # restored, not recomputed
    redo = call("Redo", segmentation_pb2.RedoRequest(project_id="p1", session_id=sid))
    assert not redo.HasField("redone_box") and (_mask(redo.update, shape) == after).all()

    # back to no input: another box (around B) starts the object afresh and drops the redo stack
    for _ in range(2):
        call("Undo", segmentation_pb2.UndoRequest(project_id="p1", session_id=sid))
    other = _box(call, sid, scene["B"]["box"])
    assert other.update.redo_depth == 0 and iou(_mask(other.update, shape), scene["B"]["gt"]) > 0.7
    finished = call("FinishSession", segmentation_pb2.FinishSessionRequest(project_id="p1", session_id=sid)).session
    assert finished.HasField("box") and len(finished.clicks) == 1


@pytest.mark.parametrize(("box", "field"), [
    (None, "box"),
    ((10, 10, 0, 20), "box.width"),  # empty
    ((60, 10, -30, 20), "box.width"),  # inverted
    ((10, 40, 30, -5), "box.height"),
    ((-1, 10, 30, 20), "box.x"),
    ((500, 10, 30, 20), "box.x"),  # the image is 520 wide: past its right edge
    ((10, 230, 30, 20), "box.y"),  # 240 high
    ((float("nan"), 10, 30, 20), "box.x"),
])
def test_a_bad_box_is_refused_naming_its_field_and_changes_nothing(call, scene, box, field):
    sid = _start(call, scene)
    request = segmentation_pb2.AddBoxRequest(project_id="p1", session_id=sid)
    if box is not None:
        request.box.CopyFrom(common_pb2.Box(x=box[0], y=box[1], width=box[2], height=box[3]))
    with pytest.raises(grpc.RpcError) as refused:
        call("AddBox", request)
    code, _, fields = error_of(refused)
    assert code == grpc.StatusCode.INVALID_ARGUMENT and fields == [field]
    session = call("GetSession", segmentation_pb2.SegmentationGetSessionRequest(project_id="p1", session_id=sid)).session
    assert not session.clicks and not session.HasField("box")


def test_a_box_on_an_unknown_or_finished_session_is_refused(call, scene):
    with pytest.raises(grpc.RpcError) as unknown:
        _box(call, "no-such-session", scene["A"]["box"])
    assert unknown.value.code() == grpc.StatusCode.NOT_FOUND
    sid = _start(call, scene)
    call("FinishSession", segmentation_pb2.FinishSessionRequest(
        project_id="p1", session_id=sid, outcome=common_pb2.SESSION_OUTCOME_SKIPPED))
    with pytest.raises(grpc.RpcError) as finished:
        _box(call, sid, scene["A"]["box"])
    assert finished.value.code() == grpc.StatusCode.FAILED_PRECONDITION


# --- foundation models: the box goes to SAM's decoder natively ------------------------------------------------

exported, foundation_triton = test_foundation.exported, test_foundation.triton


@pytest.mark.parametrize("family", list(test_foundation.FAMILIES))
def test_a_foundation_session_passes_the_box_as_sams_box_prompt(family, foundation_triton, settings, spawn):
    """The service's masks are the decoder's with the box's corners (labels 2, 3) after the clicks, for the box
    step and for the click that corrects it; without the box the decoder answers otherwise."""
    name = test_foundation.FAMILIES[family]
    seg = settings.model_copy(update={
        "triton_grpc_url": foundation_triton.grpc_url, "triton_http_port": foundation_triton.http_port,
        "segmentation_project_models": {"p1": f"{name}_decoder"}, "segmentation_session_ttl_s": 600})
    migrate(seg.resolved_database_url)
    key = KeyStore(make_session_factory(make_engine(seg.resolved_database_url)), 0).create(
        "annotator", Role.ANNOTATOR, ["p1"])[1]
    start_service(spawn, "segmentation", seg)
    auth = [("authorization", f"Bearer {key}")]
    image = test_foundation._image()
    shape, box, click = image.shape[:2], (60, 40, 120, 100), Click(150, 120, False)
    with grpc.insecure_channel(seg.service_address("segmentation")) as channel:
        rpc = segmentation_pb2_grpc.SegmentationStub(channel)
        sid = rpc.StartSession(segmentation_pb2.StartSessionRequest(project_id="p1", image_data=encode_png(image)),
                               metadata=auth, timeout=120).session.session_id
        boxed = rpc.AddBox(segmentation_pb2.AddBoxRequest(project_id="p1", session_id=sid, box=common_pb2.Box(
            x=box[0], y=box[1], width=box[2], height=box[3])), metadata=auth, timeout=60)
        clicked = rpc.AddClick(segmentation_pb2.AddClickRequest(project_id="p1", session_id=sid, click=common_pb2.Click(
            x=click.x, y=click.y, positive=click.positive)), metadata=auth, timeout=60)
        assert boxed.update.model_version == f"{name}_decoder:1+{name}_encoder:1"
        undo = rpc.Undo(segmentation_pb2.UndoRequest(project_id="p1", session_id=sid), metadata=auth, timeout=30)
        assert not undo.HasField("undone_box")
        undo = rpc.Undo(segmentation_pb2.UndoRequest(project_id="p1", session_id=sid), metadata=auth, timeout=30)
        assert undo.HasField("undone_box") and _mask(undo.update, shape).sum() == 0

    model = FoundationModel(foundation_triton.grpc_url, f"{name}_decoder", default_timeout_s=120).describe()
    features = model.encode(image)
    corners = (box[0], box[1], box[0] + box[2], box[1] + box[3])
    threshold = seg.segmentation_threshold
    first, _, _ = model.decode(features, [], shape, None, corners)
    second, _, _ = model.decode(features, [click], shape, first, corners)
    no_box, _, _ = model.decode(features, [click], shape, first)
    model.close()
    assert (_mask(boxed.update, shape) == (model.probability(first, shape) > threshold)).mean() > 0.999
    expected = model.probability(second, shape) > threshold
    assert (_mask(clicked.update, shape) == expected).mean() > 0.999
    assert (expected != (model.probability(no_box, shape) > threshold)).sum() > 0  # the box is an input that matters
