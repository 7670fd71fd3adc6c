"""Video propagation through the video service's gRPC API: a real server, a real Celery worker on the
``video`` queue, real Redis, and a short DAVIS clip stored as ordered frames."""

from __future__ import annotations

import shutil

import cv2
import grpc
import pytest
from grpc_status import rpc_status

from annotation.v1 import common_pb2, video_pb2, video_pb2_grpc
from services.common.keys import KeyStore, Role
from services.common.masks import decode_rle, encode_rle, iou
from services.common.storage import make_engine, make_session_factory, migrate
from services.common.video_layout import VIDEO_ROOT
from services.video.tasks import VIDEO_QUEUE
from tests.conftest import PYTHON, start_service, wait_until

pytestmark = pytest.mark.integration
FRAMES = 5


@pytest.fixture
def server(settings, spawn):
    """The video server alone, and an annotator's key of p1."""
    migrate(settings.resolved_database_url)
    token = KeyStore(make_session_factory(make_engine(settings.resolved_database_url)), 0).create(
        "annotator", Role.ANNOTATOR, ["p1"])[1]
    start_service(spawn, "video", settings)
    with grpc.insecure_channel(settings.service_address("video")) as channel:
        yield video_pb2_grpc.VideoStub(channel), [("authorization", f"Bearer {token}")]


@pytest.fixture
def video(server, settings, video_data, spawn):
    """The server, its worker, and a 5-frame clip ``clip`` of project p1."""
    frames = settings.var_dir / VIDEO_ROOT / "p1" / "clip" / "frames"
    frames.mkdir(parents=True)
    for path in sorted((video_data / "car-shadow" / "frames").glob("*.jpg"))[:FRAMES]:
        shutil.copy(path, frames / path.name)  # into the test's own var dir, never into the repo
    spawn([PYTHON, "-m", "celery", "-A", "services.video.worker:app", "worker", "-Q", VIDEO_QUEUE,
           "-n", "video-rpc@%h", "--concurrency", "1", "--without-gossip", "--without-mingle"], settings)
    return server


def first_mask(video_data) -> common_pb2.Mask:
    size, counts = encode_rle(cv2.imread(str(video_data / "car-shadow" / "masks" / "00000.png"), 0) > 0)
    return common_pb2.Mask(size=size, counts=counts)


def field_of(err: grpc.RpcError) -> str:
    detail = common_pb2.ErrorDetail()
    rpc_status.from_call(err).details[0].Unpack(detail)
    return detail.field


def test_start_progress_and_per_frame_rle(video, video_data):
    stub, auth = video
    mask = first_mask(video_data)
    started = stub.StartPropagation(video_pb2.StartPropagationRequest(
        project_id="p1", video_id="clip", fine_tune_steps=5, suggest_count=2,
        suggest_granularity=common_pb2.GRANULARITY_PATCH, suggest_patch_size_px=64, samples=[
            video_pb2.AnnotatedSample(frame_index=0, mask=mask, clicks=5,
                                      region=common_pb2.Region(frame=common_pb2.Region.Frame(video_id="clip"))),
            video_pb2.AnnotatedSample(frame_index=3, mask=mask, clicks=1, region=common_pb2.Region(
                patch=common_pb2.Region.Patch(row=0, col=0, size_px=64)))]), metadata=auth, timeout=10)
    op = started.operation
    assert op.kind == "video.propagate" and op.id

    def finished():
        reply = stub.GetPropagation(video_pb2.GetPropagationRequest(project_id="p1", operation_id=op.id),
                                    metadata=auth, timeout=10)
        return reply if reply.operation.state in (common_pb2.Operation.SUCCEEDED, common_pb2.Operation.FAILED) else None

    reply = wait_until(finished, 240, "propagation finished", interval_s=1)
    assert reply.operation.state == common_pb2.Operation.SUCCEEDED, reply.operation.error.message
    assert reply.frames_total == FRAMES and reply.frames_done == FRAMES and reply.clicks_used == 6
    assert reply.video_id == "clip" and len(reply.suggested_samples) == 2
    assert all(s.WhichOneof("kind") == "box" and s.box.width > 0 for s in reply.suggested_samples)

    stream = list(stub.StreamPropagationMasks(video_pb2.StreamPropagationMasksRequest(
        project_id="p1", operation_id=op.id, start_frame=1, end_frame=4), metadata=auth, timeout=10))
    assert [m.frame_index for m in stream] == [1, 2, 3] and [m.image_id for m in stream] == ["00001", "00002", "00003"]
    truth = cv2.imread(str(video_data / "car-shadow" / "masks" / "00002.png"), 0) > 0
    assert iou(decode_rle(stream[1].mask.size, stream[1].mask.counts, truth.shape, "mask"), truth) > 0.6
    assert not any(m.human_annotated for m in stream) and all(0.5 <= m.confidence <= 1 for m in stream)


def test_bad_requests_name_the_field(video, video_data):
    stub, auth = video
    sample = video_pb2.AnnotatedSample(frame_index=0, mask=first_mask(video_data))
    cases = [
        (video_pb2.StartPropagationRequest(project_id="p1", video_id="nope", samples=[sample]),
         grpc.StatusCode.NOT_FOUND, "video_id"),
        (video_pb2.StartPropagationRequest(project_id="p1", video_id="../p1"),
         grpc.StatusCode.INVALID_ARGUMENT, "video_id"),
        (video_pb2.StartPropagationRequest(project_id="p1", video_id="clip"),
         grpc.StatusCode.INVALID_ARGUMENT, "samples"),
        (video_pb2.StartPropagationRequest(project_id="p1", video_id="clip", samples=[
            video_pb2.AnnotatedSample(frame_index=FRAMES, mask=sample.mask)]),
         grpc.StatusCode.INVALID_ARGUMENT, "samples[0].frame_index"),
        (video_pb2.StartPropagationRequest(project_id="p1", video_id="clip", samples=[sample],
                                           suggest_granularity=common_pb2.GRANULARITY_PATCH,
                                           suggest_patch_size_px=30),
         grpc.StatusCode.INVALID_ARGUMENT, "suggest_granularity"),
    ]
    for request, code, field in cases:
        with pytest.raises(grpc.RpcError) as exc:
            stub.StartPropagation(request, metadata=auth, timeout=10)
        assert exc.value.code() == code and field_of(exc.value) == field, exc.value.details()
    with pytest.raises(grpc.RpcError) as exc:
        stub.GetPropagation(video_pb2.GetPropagationRequest(project_id="p1", operation_id="missing"),
                            metadata=auth, timeout=10)
    assert exc.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.RpcError) as exc:
        stub.StartPropagation(video_pb2.StartPropagationRequest(project_id="p1"), timeout=10)
    assert exc.value.code() == grpc.StatusCode.UNAUTHENTICATED
    # A mask that does not decode fails the operation (the worker decodes it), with the reason.
    started = stub.StartPropagation(video_pb2.StartPropagationRequest(
        project_id="p1", video_id="clip", samples=[video_pb2.AnnotatedSample(
            frame_index=1, mask=common_pb2.Mask(size=list(sample.mask.size), counts="!!"))]),
        metadata=auth, timeout=10)
    failed = wait_until(lambda: (r := stub.GetPropagation(video_pb2.GetPropagationRequest(
        project_id="p1", operation_id=started.operation.id), metadata=auth, timeout=10)).operation.state
        == common_pb2.Operation.FAILED and r, 120, "operation failed", interval_s=1)
    assert "RLE" in failed.operation.error.message and failed.frames_done == 0


def test_propagation_authenticates_before_it_validates(server):
    stub, auth = server
    request = video_pb2.StartPropagationRequest(project_id="p1")  # no video_id
    with pytest.raises(grpc.RpcError) as exc:
        stub.StartPropagation(request, timeout=5)
    assert exc.value.code() == grpc.StatusCode.UNAUTHENTICATED
    with pytest.raises(grpc.RpcError) as exc:
        stub.StartPropagation(request, metadata=auth, timeout=5)
    assert exc.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert exc.value.details().startswith("video_id:")
