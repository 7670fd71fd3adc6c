"""The segmentation service as clients meet it: a real server process, real Redis, the real
tritonserver running the shipped model repository on CPU."""

from __future__ import annotations

import base64
import io
import json

import grpc
import numpy as np
import pytest
from grpc_status import rpc_status
from PIL import Image
from redis import Redis

from annotation.v1 import common_pb2, segmentation_pb2, segmentation_pb2_grpc
from services.common import annotation_events
from services.common.clicks import Click
from services.common.keys import KeyStore, Role
from services.common.masks import decode_rle, iou
from services.common.settings import served_model_dir
from services.common.storage import make_engine, make_session_factory, migrate
from services.models import click_pipeline, grabcut
from tests.conftest import SHARED_DATA, start_service, wait_until

MODEL_DIR = served_model_dir()

pytestmark = pytest.mark.integration

IMAGE = SHARED_DATA / "grabcut" / "images" / "124080.jpg"


def bearer(token: str) -> list[tuple[str, str]]:
    return [("authorization", f"Bearer {token}")]


def jpeg(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="JPEG", quality=95)
    return buffer.getvalue()


@pytest.fixture
def seg_settings(settings, triton_server):
    return settings.model_copy(update={
        "triton_grpc_url": triton_server.grpc_url, "triton_http_port": triton_server.http_port,
        "segmentation_max_image_pixels": 1_000_000, "segmentation_session_ttl_s": 600})


@pytest.fixture
def token(seg_settings):
    migrate(seg_settings.resolved_database_url)
    store = KeyStore(make_session_factory(make_engine(seg_settings.resolved_database_url)), 0)
    return store.create("annotator", Role.ANNOTATOR, ["p1"])[1]


@pytest.fixture
def stub(seg_settings, token, spawn):
    start_service(spawn, "segmentation", seg_settings)
    with grpc.insecure_channel(seg_settings.service_address("segmentation")) as channel:
        yield segmentation_pb2_grpc.SegmentationStub(channel)


@pytest.fixture
def call(stub, token):
    def _call(method: str, request, timeout: float = 30):
        return getattr(stub, method)(request, metadata=bearer(token), timeout=timeout)
    return _call


def error_of(excinfo) -> tuple[grpc.StatusCode, str, list]:
    err = excinfo.value
    status = rpc_status.from_call(err)
    fields = []
    if status is not None:
        for detail in status.details:
            info = common_pb2.ErrorDetail()
            if detail.Unpack(info):
                fields.append(info.field)
    return err.code(), err.details(), fields


def image_bytes() -> tuple[bytes, np.ndarray]:
    data = IMAGE.read_bytes()
    return data, np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


def test_predict_runs_the_shipped_network_in_triton(call, seg_settings):
    data, image = image_bytes()
    clicks = [Click(230, 200, True), Click(60, 40, False)]
    reply = call("Predict", segmentation_pb2.PredictRequest(
        project_id="p1", image_data=data,
        clicks=[common_pb2.Click(x=c.x, y=c.y, positive=c.positive) for c in clicks]))
    mask = decode_rle(reply.mask.size, reply.mask.counts, image.shape[:2], "mask")
    # The shipped default's TorchScript in-process (its whole per-click pipeline, no refinement) gives the
    # same mask: the service really runs the shipped model through Triton, not something else (with the
    # GrabCut refinement on top, served until the refinement bench, IoU is 0.62 here).
    assert seg_settings.triton_model_name == MODEL_DIR.name == "clickseg_lite0"
    prob = click_pipeline.served_segmenters(MODEL_DIR)(image)(clicks, None)
    assert iou(mask, prob > seg_settings.segmentation_threshold) > 0.99
    assert iou(mask, grabcut.refine(image, prob, clicks) > 0.5) < 0.9
    assert reply.model_latency_ms > 0 and reply.service_latency_ms >= reply.model_latency_ms
    assert reply.model_version.startswith("clickseg")
    assert (reply.image.width, reply.image.height) == (image.shape[1], image.shape[0])
    assert reply.stats.area_px == int(mask.sum())


def test_session_clicks_undo_redo_and_finish(call, seg_settings):
    data, image = image_bytes()
    start = call("StartSession", segmentation_pb2.StartSessionRequest(
        project_id="p1", image_data=data, task_id="t-1")).session  # the annotator: the key's own id
    sid = start.session_id
    assert start.state == segmentation_pb2.SEGMENTATION_SESSION_STATE_ACTIVE
    assert (start.image.width, start.image.height) == (image.shape[1], image.shape[0])
    masks = []
    for i, (x, y, positive) in enumerate([(230, 200, True), (60, 40, False), (300, 250, True)]):
        reply = call("AddClick", segmentation_pb2.AddClickRequest(
            project_id="p1", session_id=sid, click=common_pb2.Click(x=x, y=y, positive=positive, t_ms=900 * i)))
        assert reply.click.index == i and reply.update.click_count == i + 1
        assert reply.update.model_latency_ms > 0
        masks.append(reply.update.mask)
    undo = call("Undo", segmentation_pb2.UndoRequest(project_id="p1", session_id=sid))
    assert undo.undone_click.x == 300 and undo.update.mask == masks[1] and undo.update.redo_depth == 1
    assert undo.update.model_latency_ms == 0  # restored, no model call
    redo = call("Redo", segmentation_pb2.RedoRequest(project_id="p1", session_id=sid))
    assert redo.update.mask == masks[2] and redo.update.click_count == 3 and redo.update.redo_depth == 0
    got = call("GetSession", segmentation_pb2.SegmentationGetSessionRequest(project_id="p1", session_id=sid))
    assert [c.x for c in got.session.clicks] == [230, 60, 300] and got.session.mask == masks[2]

    finished = call("FinishSession", segmentation_pb2.FinishSessionRequest(project_id="p1", session_id=sid))
    assert finished.session.state == segmentation_pb2.SEGMENTATION_SESSION_STATE_FINISHED
    assert finished.session.outcome == common_pb2.SESSION_OUTCOME_SUBMITTED
    assert finished.quality_operation_id and finished.byproducts_operation_id
    again = call("FinishSession", segmentation_pb2.FinishSessionRequest(project_id="p1", session_id=sid))
    assert again.quality_operation_id == finished.quality_operation_id  # idempotent, nothing re-sent
    redis = Redis.from_url(seg_settings.redis_url)
    assert redis.llen("byproducts") == 1 and redis.llen("quality") == 1  # Celery's queues
    with pytest.raises(grpc.RpcError) as exc:
        call("AddClick", segmentation_pb2.AddClickRequest(
            project_id="p1", session_id=sid, click=common_pb2.Click(x=1, y=1, positive=True)))
    assert exc.value.code() == grpc.StatusCode.FAILED_PRECONDITION


def test_bad_input_is_refused_and_changes_nothing(call):
    data, image = image_bytes()
    height, width = image.shape[:2]
    with pytest.raises(grpc.RpcError) as exc:
        call("StartSession", segmentation_pb2.StartSessionRequest(project_id="p1", image_data=b"GIF89a junk"))
    code, _, fields = error_of(exc)
    assert code == grpc.StatusCode.INVALID_ARGUMENT and fields == ["image_data"]

    big = jpeg(np.zeros((1100, 1000, 3), np.uint8))  # 1.1 Mpx, the test limit is 1 Mpx
    with pytest.raises(grpc.RpcError) as exc:
        call("Predict", segmentation_pb2.PredictRequest(project_id="p1", image_data=big,
                                                        clicks=[common_pb2.Click(x=5, y=5, positive=True)]))
    code, details, fields = error_of(exc)
    assert code == grpc.StatusCode.INVALID_ARGUMENT and fields == ["image_data"] and "limit" in details

    with pytest.raises(grpc.RpcError) as exc:
        call("Predict", segmentation_pb2.PredictRequest(
            project_id="p1", image_data=data, clicks=[common_pb2.Click(x=5, y=5, positive=True),
                                                      common_pb2.Click(x=width, y=5, positive=False)]))
    assert error_of(exc)[0] == grpc.StatusCode.INVALID_ARGUMENT and error_of(exc)[2] == ["clicks[1].x"]

    with pytest.raises(grpc.RpcError) as exc:
        call("Predict", segmentation_pb2.PredictRequest(
            project_id="p1", image_data=data, clicks=[common_pb2.Click(x=5, y=5, positive=True)],
            previous_mask=common_pb2.Mask(size=[height, width], counts="0123~~")))
    assert error_of(exc)[2] == ["previous_mask.counts"]

    sid = call("StartSession", segmentation_pb2.StartSessionRequest(project_id="p1", image_data=data)).session.session_id
    for x, y, field in [(-1, 10, "click.x"), (10, height + 3, "click.y"), (float("nan"), 10, "click.x")]:
        with pytest.raises(grpc.RpcError) as exc:
            call("AddClick", segmentation_pb2.AddClickRequest(
                project_id="p1", session_id=sid, click=common_pb2.Click(x=x, y=y, positive=True)))
        assert error_of(exc)[0] == grpc.StatusCode.INVALID_ARGUMENT and error_of(exc)[2] == [field]
    got = call("GetSession", segmentation_pb2.SegmentationGetSessionRequest(project_id="p1", session_id=sid))
    assert len(got.session.clicks) == 0  # refused calls changed nothing

    for request in (segmentation_pb2.AddClickRequest(project_id="p1", session_id="nope",
                                                     click=common_pb2.Click(x=1, y=1, positive=True)),):
        with pytest.raises(grpc.RpcError) as exc:
            call("AddClick", request)
        assert exc.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.RpcError) as exc:
        call("Undo", segmentation_pb2.UndoRequest(project_id="p1", session_id=sid))
    assert exc.value.code() == grpc.StatusCode.FAILED_PRECONDITION


def test_a_session_lives_for_its_ttl_after_each_call_then_is_not_found(call, seg_settings):
    """The TTL is Redis' to keep (``EXPIRE`` on the session's keys, renewed by every call); the test reads
    the TTLs the service set and lets Redis expire the keys, rather than sleeping past a TTL."""
    ttl = seg_settings.segmentation_session_ttl_s  # 600 s
    redis = Redis.from_url(seg_settings.redis_url)
    data, _ = image_bytes()
    sid = call("StartSession", segmentation_pb2.StartSessionRequest(project_id="p1", image_data=data)).session.session_id
    click = segmentation_pb2.AddClickRequest(project_id="p1", session_id=sid,
                                             click=common_pb2.Click(x=230, y=200, positive=True))
    call("AddClick", click)
    keys = [key for key in redis.scan_iter(f"seg:{sid}*") if not key.endswith(b":lock")]
    assert f"seg:{sid}".encode() in keys
    assert all(ttl - 60 < redis.ttl(key) <= ttl for key in keys), {k: redis.ttl(k) for k in keys}

    for key in keys:  # an hour of inactivity later, as far as these keys know
        redis.expire(key, 100)
    call("AddClick", click)
    assert all(redis.ttl(key) > 100 for key in keys), {k: redis.ttl(k) for k in keys}  # renewed by the call

    for key in keys:
        redis.pexpire(key, 1)
    wait_until(lambda: not any(redis.exists(key) for key in keys), 10, "Redis expired the session's keys")
    with pytest.raises(grpc.RpcError) as exc:
        call("AddClick", click)
    assert exc.value.code() == grpc.StatusCode.NOT_FOUND and "expired" in exc.value.details()
    assert f"expired after {ttl} s without activity" in exc.value.details()


def test_triton_down_is_unavailable_within_the_deadline_and_recovers(call, triton_server):
    data, _ = image_bytes()
    sid = call("StartSession", segmentation_pb2.StartSessionRequest(project_id="p1", image_data=data)).session.session_id
    click = segmentation_pb2.AddClickRequest(project_id="p1", session_id=sid,
                                             click=common_pb2.Click(x=230, y=200, positive=True))
    call("AddClick", click)  # warm: the encoding is known, the channel connected
    triton_server.stop()
    try:
        with pytest.raises(grpc.RpcError) as exc:
            call("AddClick", click, timeout=3)
        # answered by the service within the caller's deadline (a hang would be DEADLINE_EXCEEDED)
        assert exc.value.code() == grpc.StatusCode.UNAVAILABLE, exc.value.details()
        assert "Triton" in exc.value.details()
        got = call("GetSession", segmentation_pb2.SegmentationGetSessionRequest(project_id="p1", session_id=sid))
        assert len(got.session.clicks) == 1  # the failed click left the session as it was
        info = call("GetModelInfo", segmentation_pb2.SegmentationGetModelInfoRequest())
        assert not info.triton.model_ready and info.triton.error
    finally:
        triton_server.start()

    def clicked():
        try:
            return call("AddClick", click, timeout=5)
        except grpc.RpcError as err:
            assert err.code() == grpc.StatusCode.UNAVAILABLE, err.details()
            return None

    reply = wait_until(clicked, 30, "service recovered after Triton restart", interval_s=0.5)
    assert reply.update.click_count == 2  # same server process, no restart
    info = call("GetModelInfo", segmentation_pb2.SegmentationGetModelInfoRequest())
    assert info.triton.model_ready and info.input_long_side_px == 256 and info.click_radius_px == 5


def test_the_simulation_clients_drive_real_sessions(stub, seg_settings):
    """The one session client of the simulations, and its three users, against the real service. They act
    for simulated annotators, so they hold an admin key, as ``LocalStack`` gives them."""
    from services.common.clicks import IGNORE
    from services.dialog.outcomes import clicker_run
    from services.models.click_dataset import Sample
    from services.quality.simulate import run_session
    from services.segmentation.evaluate import ServiceSegmenter
    from services.simulation.segmentation_session import SegmentationSession

    data, image = image_bytes()
    annotation = np.zeros(image.shape[:2], np.uint8)
    annotation[150:260, 170:300] = 255
    annotation[150:152, 170:300] = IGNORE
    store = KeyStore(make_session_factory(make_engine(seg_settings.resolved_database_url)), 0)
    metadata = bearer(store.create("simulation", Role.ADMIN, ["p1"])[1])
    with SegmentationSession(stub, metadata, "p1", data, image.shape[:2]) as session:
        session.click(230, 200, True)
        first = session.mask.copy()
        session.click(60, 40, False)
        session.undo()
        assert (session.mask == first).all() and first.any()
    assert session.finished.state == segmentation_pb2.SEGMENTATION_SESSION_STATE_FINISHED
    assert session.finish() is session.finished  # once only

    segmenter = ServiceSegmenter(stub, metadata, project="p1")
    segment = segmenter(image)
    assert segment([Click(230, 200, True)], None).shape == image.shape[:2]
    assert segment([Click(230, 200, True), Click(60, 40, False)], None).any()
    assert len(segmenter.latencies_ms) == 2 and all(ms > 0 for ms in segmenter.model_ms)  # one AddClick each

    run = clicker_run(stub, metadata, data, annotation, None, 0.99, 3, "p1")
    assert 1 <= len(run.clicks) == len(run.ious) <= 3
    record = run_session(stub, metadata, Sample("img", image, annotation), seed=3, project="p1")
    summary = record["summary"]
    assert len(summary["clicks"]) == len(summary["steps"]) >= 1 and 0 <= record["true_iou"] <= 1
    assert summary["session"]["outcome"] == "SUBMITTED"


QUEUES = ("byproducts", "quality", "dialog", "selection", "training")


def queued(redis: Redis, queue: str) -> list[tuple[str, str, dict]]:
    """The messages waiting on a Celery queue (a Redis list): (task name, task id, the event's payload)."""
    out = []
    for raw in redis.lrange(queue, 0, -1):
        message = json.loads(raw)
        args, _kwargs, _embed = json.loads(base64.b64decode(message["body"]))
        out.append((message["headers"]["task"], message["headers"]["id"], args[0]))
    return out


def clicked_session(call, **start) -> tuple[str, list]:
    data, _ = image_bytes()
    sid = call("StartSession", segmentation_pb2.StartSessionRequest(project_id="p1", image_data=data, **start)
               ).session.session_id
    updates = [call("AddClick", segmentation_pb2.AddClickRequest(
        project_id="p1", session_id=sid, click=common_pb2.Click(x=x, y=y, positive=positive, t_ms=t))).update
        for x, y, positive, t in [(230, 200, True, 1200), (60, 40, False, 2600)]]
    return sid, updates


def test_finish_sends_one_typed_event_to_every_queue_that_needs_it(call, seg_settings):
    """The loop's fan-out: FinishSession builds one AnnotationSubmitted and sends it once to byproducts, quality,
    dialog, selection and training (``<queue>.annotation_submitted``, task id derived from annotation and
    queue); a repeated FinishSession sends nothing more and answers the same operation ids."""
    redis = Redis.from_url(seg_settings.redis_url)
    image = common_pb2.ImageRef(image_id="124080", uri=IMAGE.resolve().as_uri())
    sid, updates = clicked_session(call, image=image, task_id="task-7", question_id="q-7", label="flower")
    finished = call("FinishSession", segmentation_pb2.FinishSessionRequest(project_id="p1", session_id=sid))
    again = call("FinishSession", segmentation_pb2.FinishSessionRequest(
        project_id="p1", session_id=sid, outcome=common_pb2.SESSION_OUTCOME_SUBMITTED))
    assert (again.quality_operation_id, again.byproducts_operation_id) == \
        (finished.quality_operation_id, finished.byproducts_operation_id)

    messages = {queue: queued(redis, queue) for queue in QUEUES}
    assert {queue: len(m) for queue, m in messages.items()} == dict.fromkeys(QUEUES, 1)  # exactly one each
    events = {queue: annotation_events.decode(m[0][2], label_required=False) for queue, m in messages.items()}
    event = events["training"]
    assert all(e == event for e in events.values())  # one event, the same everywhere
    for queue, [(task, task_id, _)] in messages.items():
        assert task == f"{queue}.annotation_submitted" and task_id == annotation_events.task_id(event, queue)
    assert finished.quality_operation_id == messages["quality"][0][1]
    assert finished.byproducts_operation_id == messages["byproducts"][0][1]

    assert (event.project_id, event.annotation_id, event.session_id, event.task_id, event.question_id) == \
        ("p1", sid, sid, "task-7", "q-7")
    assert event.annotator_id == finished.session.annotator_id and event.annotator_id
    assert (event.image.image_id, event.image.uri, event.image.width, event.image.height) == \
        ("124080", image.uri, finished.session.image.width, finished.session.image.height)
    assert event.label == "flower" and event.outcome == common_pb2.SESSION_OUTCOME_SUBMITTED
    assert event.mask == finished.session.mask == updates[-1].mask  # the final mask, as COCO RLE
    assert [(c.x, c.y, c.positive, c.t_ms, c.index) for c in event.clicks] == \
        [(230, 200, True, 1200, 0), (60, 40, False, 2600, 1)]
    assert [s.area_px for s in event.steps] == [u.stats.area_px for u in updates]
    assert event.steps[1].iou_with_previous == pytest.approx(updates[1].iou_with_previous)
    name, _, version = event.model_version.partition(":")
    assert name == seg_settings.triton_model_name and version.isdigit()  # the version Triton served, e.g. clickseg:1
    assert event.HasField("submit_time") and event.total_time_ms > 0


def test_skipped_and_unlabelled_sessions_go_only_where_they_are_needed(call, seg_settings):
    redis = Redis.from_url(seg_settings.redis_url)
    skipped, _ = clicked_session(call, question_id="q-1")
    reply = call("FinishSession", segmentation_pb2.FinishSessionRequest(
        project_id="p1", session_id=skipped, outcome=common_pb2.SESSION_OUTCOME_SKIPPED))
    assert reply.byproducts_operation_id and not reply.quality_operation_id
    abandoned, _ = clicked_session(call)  # no question: the byproducts alone keep it
    call("FinishSession", segmentation_pb2.FinishSessionRequest(
        project_id="p1", session_id=abandoned, outcome=common_pb2.SESSION_OUTCOME_ABANDONED))
    unlabelled, _ = clicked_session(call)  # an annotation, but training learns classes: not without a label
    call("FinishSession", segmentation_pb2.FinishSessionRequest(project_id="p1", session_id=unlabelled))
    sent = {queue: sorted(annotation_events.decode(p, outcomes=annotation_events.ENDED, label_required=False)
                          .annotation_id for _, _, p in queued(redis, queue)) for queue in QUEUES}
    assert sent == {"byproducts": sorted([skipped, abandoned, unlabelled]), "quality": [unlabelled],
                    "dialog": [skipped], "selection": [unlabelled], "training": []}
    (_, _, payload), = queued(redis, "dialog")
    assert payload["outcome"] == "SESSION_OUTCOME_SKIPPED"
    # a caller that names no image: the event names it by its pixels, the same for every session on it
    ids = {annotation_events.decode(p, outcomes=annotation_events.ENDED, label_required=False).image.image_id
           for _, _, p in queued(redis, "byproducts")}
    assert len(ids) == 1 and ids.pop().startswith("sha256-")
    with pytest.raises(grpc.RpcError) as exc:
        call("FinishSession", segmentation_pb2.FinishSessionRequest(project_id="p1", session_id=unlabelled,
                                                                    label="x" * 201))
    assert error_of(exc)[0] == grpc.StatusCode.INVALID_ARGUMENT and error_of(exc)[2] == ["label"]
