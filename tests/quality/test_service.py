"""The quality service as clients meet it: a session annotated through the real segmentation server
(real tritonserver) reaches the real quality worker through Celery on Redis, is scored and stored, and
the quality server lists, re-scores and records reviews; bad input gets clear errors."""

from __future__ import annotations

import io

import grpc
import numpy as np
import pytest
from celery import Celery
from grpc_status import rpc_status
from PIL import Image
from redis import Redis

from annotation.v1 import (
    common_pb2,
    quality_pb2,
    quality_pb2_grpc,
    segmentation_pb2,
    segmentation_pb2_grpc,
)
from services.common.keys import KeyStore, Role
from services.common.masks import decode_rle, encode_rle
from services.common.probes import grpc_health
from services.common.storage import make_engine, make_session_factory, migrate
from services.quality import features
from services.training import reviews
from tests.conftest import PYTHON, SHARED_DATA, wait_until
from tests.quality.helpers import make_payload
from tests.segmentation.test_service import queued

pytestmark = pytest.mark.integration
P = "p1"
IMAGE = SHARED_DATA / "grabcut" / "images" / "124080.jpg"


def bearer(token: str) -> list[tuple[str, str]]:
    return [("authorization", f"Bearer {token}")]


def error_of(excinfo) -> tuple[grpc.StatusCode, list[str]]:
    fields = []
    for detail in rpc_status.from_call(excinfo.value).details if rpc_status.from_call(excinfo.value) else []:
        info = common_pb2.ErrorDetail()
        if detail.Unpack(info):
            fields.append(info.field)
    return excinfo.value.code(), fields


@pytest.fixture
def platform(settings, triton_server, spawn):
    settings = settings.model_copy(update={"triton_grpc_url": triton_server.grpc_url,
                                           "triton_http_port": triton_server.http_port})
    migrate(settings.resolved_database_url)
    keys = KeyStore(make_session_factory(make_engine(settings.resolved_database_url)), 0)
    tokens = {"reviewer": keys.create("rev", Role.REVIEWER, [P])[1],
              "annotator": keys.create("ann", Role.ANNOTATOR, [P])[1]}
    servers = {name: spawn([PYTHON, "-m", f"services.{name}.server"], settings)
               for name in ("segmentation", "quality")}
    spawn([PYTHON, "-m", "celery", "-A", "services.quality.worker:app", "worker", "-Q", "quality",
           "-n", "quality-test@%h", "--concurrency", "1", "--without-gossip", "--without-mingle"], settings)
    for name, process in servers.items():
        try:
            wait_until(lambda a=settings.service_address(name): grpc_health(a, 0.5) == "SERVING", 60, name)
        except TimeoutError:
            pytest.fail(f"{name} did not become healthy:\n{process.output()}")
    with grpc.insecure_channel(settings.service_address("segmentation")) as seg, \
            grpc.insecure_channel(settings.service_address("quality")) as qual:
        yield {"seg": segmentation_pb2_grpc.SegmentationStub(seg), "quality": quality_pb2_grpc.QualityStub(qual),
               "tokens": tokens, "settings": settings}


def annotate(seg, token: str, session_id: str) -> tuple[list[quality_pb2.ClickStep], np.ndarray]:
    """Three clicks on a small image through the real service; the steps as an inline sequence."""
    image = Image.open(IMAGE).convert("RGB").resize((160, 120))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    seg.StartSession(segmentation_pb2.StartSessionRequest(
        project_id=P, session_id=session_id, image_data=buffer.getvalue(), task_id="t1",  # annotator: the key
        image=common_pb2.ImageRef(image_id="124080")), metadata=bearer(token), timeout=60)
    steps, mask = [], None
    for i, (x, y, positive) in enumerate([(75, 62, True), (60, 40, True), (10, 10, False)]):
        click = common_pb2.Click(x=x, y=y, positive=positive, t_ms=1200 * (i + 1))
        reply = seg.AddClick(segmentation_pb2.AddClickRequest(project_id=P, session_id=session_id, click=click),
                             metadata=bearer(token), timeout=60)
        update = reply.update
        assert reply.click.index == i
        steps.append(quality_pb2.ClickStep(
            click=reply.click, mask_after=update.mask, click_confidence=update.stats.click_confidence,
            mean_confidence=update.stats.mean_confidence, uncertain_fraction=update.stats.uncertain_fraction))
        mask = decode_rle(update.mask.size, update.mask.counts, (120, 160), "mask")
    finished = seg.FinishSession(segmentation_pb2.FinishSessionRequest(
        project_id=P, session_id=session_id, outcome=common_pb2.SESSION_OUTCOME_SUBMITTED),
        metadata=bearer(token), timeout=60)
    assert finished.quality_operation_id
    return steps, mask


def test_finished_sessions_are_scored_listed_rescored_and_reviewed(platform):
    seg, quality = platform["seg"], platform["quality"]
    reviewer = bearer(platform["tokens"]["reviewer"])
    steps, mask = annotate(seg, platform["tokens"]["annotator"], "sess-1")

    def queue(**kwargs):
        return quality.ListReviewQueue(quality_pb2.ListReviewQueueRequest(project_id=P, **kwargs),
                                       metadata=reviewer, timeout=10)

    listed = wait_until(lambda: (q := queue()).items and q, 60, "the worker scored the finished session")
    (item,) = listed.items
    annotator = platform["tokens"]["annotator"].removeprefix("ak_").partition(".")[0]  # the key's id
    assert item.session_id == "sess-1" and item.annotator_id == annotator and item.click_count == 3
    assert item.image.image_id == "124080" and (item.image.width, item.image.height) == (160, 120)
    assert (decode_rle(item.mask.size, item.mask.counts, (120, 160), "mask") == mask).all()
    assert 0 <= item.score.predicted_iou <= 1 and 0 <= item.score.probability_below_threshold <= 1
    assert item.score.threshold == pytest.approx(0.85) and len(item.score.top_reasons) == 5
    assert item.verdict == quality_pb2.REVIEW_VERDICT_UNSPECIFIED and item.true_iou == -1

    # A redelivered event (at-least-once) changes nothing: still one row per session id.
    app = Celery(broker=platform["settings"].redis_url, backend=platform["settings"].redis_url)
    payload = make_payload("dup", project_id=P)
    results = [app.send_task("quality.annotation_submitted", args=[payload], queue="quality") for _ in range(2)]
    assert results[0].get(timeout=30) == results[1].get(timeout=30)
    assert queue().page.total_size == 2
    # A malformed event is refused, naming the field, and stores nothing.
    bad = app.send_task("quality.annotation_submitted", args=[{**payload, "annotation_id": "bad", "session_id": "bad",
                                                               "clicks": [{"x": 999, "y": 1}]}], queue="quality")
    bad.get(timeout=30, propagate=False)
    assert bad.state == "FAILURE" and "InvalidEvent: clicks[0]:" in bad.traceback, bad.traceback
    assert queue().page.total_size == 2

    stored = quality.Score(quality_pb2.ScoreRequest(project_id=P, session_id="sess-1"),
                           metadata=reviewer, timeout=10).score
    assert stored.session_id == "sess-1" and stored.predicted_iou == pytest.approx(item.score.predicted_iou, abs=1e-5)
    inline = quality.Score(quality_pb2.ScoreRequest(project_id=P, threshold=0.9, sequence=quality_pb2.ClickSequence(
        image=common_pb2.ImageRef(width=160, height=120), steps=steps, total_time_ms=5000)),
        metadata=reviewer, timeout=10).score
    assert inline.session_id == "" and inline.threshold == pytest.approx(0.9)
    assert inline.predicted_iou == pytest.approx(stored.predicted_iou, abs=0.05)  # same session, told inline
    batch = quality.ScoreBatch(quality_pb2.ScoreBatchRequest(project_id=P, items=[
        quality_pb2.ScoreBatchItem(session_id="dup"), quality_pb2.ScoreBatchItem(session_id="sess-1")]),
        metadata=reviewer, timeout=10)
    assert [s.session_id for s in batch.scores] == ["dup", "sess-1"]

    corrected = mask.copy()
    corrected[:, :80] = False
    size, counts = encode_rle(corrected)
    reviewed = quality.RecordReview(quality_pb2.RecordReviewRequest(
        project_id=P, session_id="sess-1", verdict=quality_pb2.REVIEW_VERDICT_CORRECTED,
        corrected_mask=common_pb2.Mask(size=size, counts=counts), reviewer_id="rev"), metadata=reviewer,
        timeout=10).item
    assert reviewed.verdict == quality_pb2.REVIEW_VERDICT_CORRECTED
    assert reviewed.true_iou == pytest.approx(corrected.sum() / max(mask.sum(), 1), abs=1e-4)
    # The verdict is the quality model's training data: one SessionReviewed to the training service (no training
    # worker runs here, so it waits on the queue), with the true IoU and the features the score was made of.
    (message,) = [reviews.decode(payload) for name, _, payload in queued(Redis.from_url(platform["settings"].redis_url),
                                                                          "training")
                  if name == "training.session_reviewed" and payload["session_id"] == "sess-1"]
    assert message.true_iou == pytest.approx(reviewed.true_iou, abs=1e-4) and message.image_id == "124080"
    assert len(message.steps) == 3 and list(message.step_feature_names) == list(features.STEP_FEATURES)
    assert message.base_probability_below == pytest.approx(item.score.probability_below_threshold, abs=1e-5)
    assert [i.session_id for i in queue().items] == ["dup"]
    assert len(queue(include_reviewed=True).items) == 2

    info = quality.GetModelInfo(quality_pb2.QualityGetModelInfoRequest(), metadata=reviewer, timeout=10)
    assert info.model_name == "click-gru" and info.model_version == stored.model_version
    assert "step.iou_with_previous" in info.features and "session.total_time" in info.features
    assert info.training_command.startswith("python -m services.quality.train") and info.training_sessions > 0


def test_bad_input_gets_clear_errors(platform):
    quality = platform["quality"]
    reviewer = bearer(platform["tokens"]["reviewer"])
    image = common_pb2.ImageRef(width=160, height=120)
    empty = np.zeros((120, 160), bool)
    size, counts = encode_rle(empty)

    def step(t_ms, index, x=10.0):
        return quality_pb2.ClickStep(click=common_pb2.Click(x=x, y=10, positive=True, t_ms=t_ms, index=index),
                                     mask_after=common_pb2.Mask(size=size, counts=counts))

    cases = [
        (quality_pb2.ScoreRequest(project_id=P, session_id="unknown"), grpc.StatusCode.NOT_FOUND, "session_id"),
        (quality_pb2.ScoreRequest(project_id=P), grpc.StatusCode.INVALID_ARGUMENT, "subject"),
        (quality_pb2.ScoreRequest(project_id=P, sequence=quality_pb2.ClickSequence(image=image)),
         grpc.StatusCode.INVALID_ARGUMENT, "sequence.steps"),
        (quality_pb2.ScoreRequest(project_id=P, sequence=quality_pb2.ClickSequence(
            image=image, steps=[step(900, 0), step(300, 1)])), grpc.StatusCode.INVALID_ARGUMENT,
         "sequence.steps[1].click.t_ms"),
        (quality_pb2.ScoreRequest(project_id=P, sequence=quality_pb2.ClickSequence(
            image=image, steps=[step(900, 0, x=500)])), grpc.StatusCode.INVALID_ARGUMENT,
         "sequence.steps[0].click.x"),
        (quality_pb2.ScoreRequest(project_id=P, threshold=1.5, sequence=quality_pb2.ClickSequence(
            image=image, steps=[step(900, 0)])), grpc.StatusCode.INVALID_ARGUMENT, "threshold"),
    ]
    for request, code, field in cases:
        with pytest.raises(grpc.RpcError) as excinfo:
            quality.Score(request, metadata=reviewer, timeout=10)
        assert error_of(excinfo)[0] == code, field
        assert field in error_of(excinfo)[1] or code == grpc.StatusCode.NOT_FOUND, (field, error_of(excinfo))

    good = quality_pb2.ScoreBatchItem(sequence=quality_pb2.ClickSequence(image=image, steps=[step(900, 0)]))
    bad = quality_pb2.ScoreBatchItem(sequence=quality_pb2.ClickSequence(image=image, steps=[step(0, 3)]))
    with pytest.raises(grpc.RpcError) as excinfo:
        quality.ScoreBatch(quality_pb2.ScoreBatchRequest(project_id=P, items=[good, bad]), metadata=reviewer,
                           timeout=10)
    assert error_of(excinfo) == (grpc.StatusCode.INVALID_ARGUMENT, ["items[1].sequence.steps[0].click.index"])
    with pytest.raises(grpc.RpcError) as excinfo:
        quality.RecordReview(quality_pb2.RecordReviewRequest(
            project_id=P, session_id="unknown", verdict=quality_pb2.REVIEW_VERDICT_ACCEPTED), metadata=reviewer,
            timeout=10)
    assert excinfo.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.RpcError) as excinfo:  # scoring needs a reviewer
        quality.Score(quality_pb2.ScoreRequest(project_id=P, session_id="x"),
                      metadata=bearer(platform["tokens"]["annotator"]), timeout=10)
    assert excinfo.value.code() == grpc.StatusCode.PERMISSION_DENIED
    with pytest.raises(grpc.RpcError) as excinfo:
        quality.ListReviewQueue(quality_pb2.ListReviewQueueRequest(
            project_id=P, page=common_pb2.PageRequest(page_token="nope")), metadata=reviewer, timeout=10)
    assert error_of(excinfo) == (grpc.StatusCode.INVALID_ARGUMENT, ["page.page_token"])
