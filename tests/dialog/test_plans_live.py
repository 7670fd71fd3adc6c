"""The policy plans what it claims (issue 22), through real servers: a region question on selection's
patch or superpixel pick, SKIP when nothing clears the gain threshold, and a VERIFY question whose
proposal the segmentation service made live (and none when it is down)."""

from __future__ import annotations

import time

import grpc
import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as mask_utils

from annotation.v1 import (
    common_pb2,
    dialog_pb2,
    dialog_pb2_grpc,
    operations_pb2,
    operations_pb2_grpc,
    segmentation_pb2,
    segmentation_pb2_grpc,
    selection_pb2,
    selection_pb2_grpc,
)
from services.common.keys import KeyStore, Role
from services.common.masks import decode_rle, iou
from services.common.storage import make_engine, make_session_factory, migrate
from tests.conftest import PYTHON, start_service, wait_until

pytestmark = pytest.mark.integration
P = "p1"
D = dialog_pb2


def _keys(settings) -> dict:
    migrate(settings.resolved_database_url)
    store = KeyStore(make_session_factory(make_engine(settings.resolved_database_url)), 0)
    tokens = {role: store.create(f"{role.name}-{time.time_ns()}", role, [P])[1]
              for role in (Role.ANNOTATOR, Role.ADMIN)}
    return {"annotator": [("authorization", f"Bearer {tokens[Role.ANNOTATOR]}")],
            "admin": [("authorization", f"Bearer {tokens[Role.ADMIN]}")],
            "annotator_id": store.verify(tokens[Role.ANNOTATOR]).key_id}


def _image(path, seed: int = 0) -> str:
    """A dark 64x48 image with a bright disk in the middle (an object the network can find)."""
    rng = np.random.default_rng(seed)
    pixels = (rng.random((48, 64, 3)) * 40).astype(np.uint8)
    yy, xx = np.mgrid[:48, :64]
    pixels[(yy - 24) ** 2 + (xx - 32) ** 2 < 13**2] = (230, 60, 40)
    Image.fromarray(pixels).save(path)
    return path.resolve().as_uri()


def _whole(image_id: str, uri: str = "", score: float = 0.9) -> D.Candidate:
    return D.Candidate(region=common_pb2.Region(image_id=image_id, whole_image=common_pb2.Region.WholeImage()),
                       image=common_pb2.ImageRef(image_id=image_id, uri=uri), selection_score=score)


def _probs(rng, h=48, w=64):
    e = np.exp(rng.normal(size=(2, h, w)) * 3)
    return e / e.sum(axis=0)


def _tensor(a: np.ndarray) -> selection_pb2.Tensor:
    return selection_pb2.Tensor(shape=list(a.shape), dtype=selection_pb2.Tensor.FLOAT32, data=a.astype("<f4").tobytes())


@pytest.fixture
def regions(settings, spawn, tmp_path):
    """Selection (server and worker) with a pool scored by patch and superpixel, and the dialog."""
    keys = _keys(settings)
    start_service(spawn, "selection", settings)
    spawn([PYTHON, "-m", "celery", "-A", "services.selection.worker:app", "worker", "-Q", "selection",
           "-n", "selection-test@%h", "--concurrency", "1", "--without-gossip", "--without-mingle"], settings)
    start_service(spawn, "dialog", settings)
    with grpc.insecure_channel(settings.service_address("selection")) as sel_channel, \
            grpc.insecure_channel(settings.service_address("dialog")) as channel:
        selection, admin = selection_pb2_grpc.SelectionStub(sel_channel), keys["admin"]
        selection.CreatePool(selection_pb2.CreatePoolRequest(project_id=P, pool_id="default",
                                                             class_names=["background", "object"]), metadata=admin)
        items = [selection_pb2.PoolItem(item_id=f"im{i}", kind=selection_pb2.ITEM_KIND_IMAGE, image=common_pb2.ImageRef(
            image_id=f"im{i}", uri=_image(tmp_path / f"im{i}.png", i))) for i in range(3)]
        selection.RegisterItems(selection_pb2.RegisterItemsRequest(project_id=P, pool_id="default", items=items),
                                metadata=admin)
        rng = np.random.default_rng(0)
        selection.PutPredictions(iter([selection_pb2.PutPredictionsRequest(
            project_id=P, pool_id="default", predictions=[selection_pb2.ItemPrediction(
                item_id=f"im{i}", probabilities=_tensor(_probs(rng)), model_version="m:1")]) for i in range(3)]),
            metadata=admin)
        op = selection.StartScoring(selection_pb2.StartScoringRequest(
            project_id=P, pool_id="default", granularities=[common_pb2.GRANULARITY_PATCH,
                                                            common_pb2.GRANULARITY_SUPERPIXEL],
            patch_sizes_px=[16], superpixel_counts=[10]), metadata=admin).operation
        ops = operations_pb2_grpc.OperationsStub(sel_channel)
        done = wait_until(lambda: (o := ops.GetOperation(operations_pb2.GetOperationRequest(
            project_id=P, operation_id=op.id), metadata=admin).operation).state in (
            common_pb2.Operation.SUCCEEDED, common_pb2.Operation.FAILED) and o, 120, "scoring done")
        assert done.state == common_pb2.Operation.SUCCEEDED, done.error
        yield {"stub": dialog_pb2_grpc.DialogStub(channel), **keys}


def test_selections_patch_or_superpixel_pick_is_asked_as_a_region_question(regions):
    stub, ann, a1 = regions["stub"], regions["annotator"], regions["annotator_id"]
    patch = stub.NextQuestion(D.NextQuestionRequest(project_id=P, annotator_id=a1, pool=D.PoolReference(
        pool_id="default", granularity=common_pb2.GRANULARITY_PATCH, patch_size_px=16)), metadata=ann).question
    assert patch.type == D.QUESTION_TYPE_LABEL_REGION and list(patch.plan) == [D.QUESTION_TYPE_LABEL_REGION]
    assert patch.region.WhichOneof("kind") == "patch" and patch.region.patch.size_px == 16
    cell = patch.region.patch
    assert (patch.region_box.x, patch.region_box.y) == (cell.col * 16, cell.row * 16)
    assert (patch.region_box.width, patch.region_box.height) == (16, 16)
    assert (patch.image.width, patch.image.height) == (64, 48) and patch.image.image_id.startswith("im")
    assert "patch" in patch.reason and "region" in patch.prompt
    assert patch.selection_model_version == "m:1"  # the version of the predictions selection scored it from

    superpixel = stub.NextQuestion(D.NextQuestionRequest(project_id=P, annotator_id=a1, pool=D.PoolReference(
        pool_id="default", granularity=common_pb2.GRANULARITY_SUPERPIXEL, n_superpixels=10)), metadata=ann).question
    assert superpixel.type == D.QUESTION_TYPE_LABEL_REGION and superpixel.region.WhichOneof("kind") == "superpixel"
    assert superpixel.selection_model_version == "m:1"
    pixels = mask_utils.decode({"size": list(superpixel.region_mask.size),
                                "counts": superpixel.region_mask.counts.encode()})
    assert pixels.shape == (48, 64) and 0 < pixels.sum() < 48 * 64
    ys, xs = np.nonzero(pixels)
    box = superpixel.region_box  # the highlighted pixels lie in the box the client limits clicks to
    assert box.x <= xs.min() and xs.max() < box.x + box.width and box.y <= ys.min() and ys.max() < box.y + box.height

    label = D.RegionLabel(label="object", box=common_pb2.Box(x=cell.col * 16, y=cell.row * 16, width=8, height=8))
    reply = stub.RecordAnswer(D.RecordAnswerRequest(project_id=P, question_id=patch.question_id,
                                                    labels=D.LabelAnswer(labels=[label]), seconds_taken=5.5),
                              metadata=ann)
    assert not reply.HasField("follow_up")
    # a client that shows only SEGMENT is not handed the region as a whole-image task
    only_segment = stub.NextQuestion(D.NextQuestionRequest(project_id=P, annotator_id=a1, pool=D.PoolReference(
        pool_id="default", granularity=common_pb2.GRANULARITY_PATCH, patch_size_px=16),
        allowed_types=[D.QUESTION_TYPE_SEGMENT]), metadata=ann)
    assert only_segment.exhausted and not only_segment.HasField("question")


@pytest.fixture
def skipping(settings, spawn):
    """The dialog with a gain threshold between what a poor and a rich candidate offer per second."""
    settings = settings.model_copy(update={"dialog_min_gain_per_second": 0.02})
    keys = _keys(settings)
    start_service(spawn, "dialog", settings)
    with grpc.insecure_channel(settings.service_address("dialog")) as channel:
        yield {"stub": dialog_pb2_grpc.DialogStub(channel), **keys}


def test_skip_when_no_plan_clears_the_gain_threshold(skipping):
    stub, ann, a1 = skipping["stub"], skipping["annotator"], skipping["annotator_id"]
    ask = lambda *cands, **kw: stub.NextQuestion(D.NextQuestionRequest(
        project_id=P, annotator_id=a1, candidates=D.CandidateList(candidates=list(cands)), **kw), metadata=ann)
    # segmenting from scratch costs about 8.5 s: 0.05 / 8.5 s is under 0.02/s, 0.9 / 8.5 s above it
    poor = ask(_whole("poor", score=0.05)).question
    assert poor.type == D.QUESTION_TYPE_SKIP and list(poor.plan) == [D.QUESTION_TYPE_SKIP]
    assert poor.expected_gain == 0 and "under the threshold 0.0200/s" in poor.reason
    stub.RecordAnswer(D.RecordAnswerRequest(project_id=P, question_id=poor.question_id,
                                            skip=D.SkipAnswer(reason="policy skip"), seconds_taken=0.4), metadata=ann)
    rich = ask(_whole("rich", score=0.9)).question
    assert rich.type == D.QUESTION_TYPE_SEGMENT and rich.gain_per_second > 0.02
    # a client that cannot show SKIP is told nothing is worth asking
    assert ask(_whole("poor2", score=0.05), allowed_types=[D.QUESTION_TYPE_SEGMENT]).exhausted


@pytest.fixture
def proposing(settings, spawn, triton_server, tmp_path):
    """Segmentation on the real tritonserver, selection, and the dialog calling both with its own key."""
    settings = settings.model_copy(update={"triton_grpc_url": triton_server.grpc_url,
                                           "triton_http_port": triton_server.http_port})
    keys = _keys(settings)
    segmentation = start_service(spawn, "segmentation", settings)
    start_service(spawn, "selection", settings)
    start_service(spawn, "dialog", settings)
    with grpc.insecure_channel(settings.service_address("dialog")) as channel, \
            grpc.insecure_channel(settings.service_address("segmentation")) as seg_channel:
        yield {"stub": dialog_pb2_grpc.DialogStub(channel), "segmentation": segmentation_pb2_grpc.SegmentationStub(
            seg_channel), "process": segmentation, "tmp": tmp_path, "settings": settings, **keys}


def test_verify_shows_a_proposal_made_live_by_segmentation_and_none_when_it_is_down(proposing):
    stub, ann, a1, tmp = proposing["stub"], proposing["annotator"], proposing["annotator_id"], proposing["tmp"]
    uri = _image(tmp / "disk.png")
    ask = lambda image_id: stub.NextQuestion(D.NextQuestionRequest(
        project_id=P, annotator_id=a1, policy="verify_k_then_segment",
        candidates=D.CandidateList(candidates=[_whole(image_id, uri)])), metadata=ann).question
    q = ask("disk")
    assert q.type == D.QUESTION_TYPE_VERIFY and q.WhichOneof("proposal") == "proposal_mask"
    assert list(q.plan) == [D.QUESTION_TYPE_VERIFY, D.QUESTION_TYPE_SEGMENT] and 0 < q.acceptance_probability < 1
    assert (q.image.width, q.image.height) == (64, 48) and not q.image.uri  # the server's path stays there
    shown = decode_rle(q.proposal_mask.size, q.proposal_mask.counts, (48, 64), "mask")
    # the project's model answers the same automatic click the same way: the proposal is the model's
    direct = proposing["segmentation"].Predict(segmentation_pb2.PredictRequest(
        project_id=P, image_data=(tmp / "disk.png").read_bytes(),
        clicks=[common_pb2.Click(x=32, y=24, positive=True)]), metadata=ann, timeout=30)
    assert iou(shown, decode_rle(direct.mask.size, direct.mask.counts, (48, 64), "mask")) > 0.9
    assert q.proposal_source == f"segmentation {direct.model_version}, automatic positive click at (32, 24)"
    rejected = stub.RecordAnswer(D.RecordAnswerRequest(project_id=P, question_id=q.question_id,
                                                       verify=D.VerifyAnswer(accepted=False), seconds_taken=1.5),
                                 metadata=ann)
    assert rejected.follow_up.type == D.QUESTION_TYPE_SEGMENT

    # selection's pick of a pool (no task model yet: a uniform draw) gets its proposal from the image it names
    with grpc.insecure_channel(proposing["settings"].service_address("selection")) as channel:
        selection = selection_pb2_grpc.SelectionStub(channel)
        selection.CreatePool(selection_pb2.CreatePoolRequest(project_id=P, pool_id="default", class_names=[
            "background", "object"]), metadata=proposing["admin"])
        selection.RegisterItems(selection_pb2.RegisterItemsRequest(project_id=P, pool_id="default", items=[
            selection_pb2.PoolItem(item_id="pooled", kind=selection_pb2.ITEM_KIND_IMAGE, image=common_pb2.ImageRef(
                image_id="pooled", uri=_image(tmp / "pooled.png", 1)))]), metadata=proposing["admin"])
    pooled = stub.NextQuestion(D.NextQuestionRequest(project_id=P, annotator_id=a1, policy="verify_k_then_segment",
                                                     pool=D.PoolReference(pool_id="default")), metadata=ann).question
    assert pooled.type == D.QUESTION_TYPE_VERIFY and pooled.image.image_id == "pooled"
    assert pooled.selection_model_version == ""  # a uniform draw: no model's scores
    assert pooled.proposal_mask.counts and pooled.proposal_source.startswith(f"segmentation {direct.model_version}")

    proposing["process"].stop()  # segmentation down: no proposal, not a made-up one
    down = ask("disk-again")
    assert down.type == D.QUESTION_TYPE_SEGMENT and down.WhichOneof("proposal") is None
    assert list(down.plan) == [D.QUESTION_TYPE_SEGMENT] and not down.proposal_source
    assert "no live proposal: segmentation UNAVAILABLE" in down.reason
