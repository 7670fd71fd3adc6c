"""FinishSession marks the session finished, then sends its event to the byproducts and quality queues (and
the others that need it: here selection, the session has no label nor question). A
segmentation server killed -9 (or Redis lost) between the two steps left a finished session that was
never handed on, and a client's retry of FinishSession found it finished and sent nothing: the session
never reached the review queue. The retry now hands it on (the tasks are idempotent).

The crash window is reproduced exactly: the test marks the session finished through the service's own
session store (what the dead server had done), then retries FinishSession against a live server."""

from __future__ import annotations

import io

import grpc
import numpy as np
import pytest
from PIL import Image
from redis import Redis

from annotation.v1 import common_pb2, segmentation_pb2_grpc
from annotation.v1 import segmentation_pb2 as pb
from services.segmentation.sessions import SessionStore
from tests.chaos.conftest import annotator_key

pytestmark = pytest.mark.integration


def _png() -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.full((40, 60, 3), 120, np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def test_a_retried_finish_hands_on_a_session_whose_server_died_before_sending(chaos_settings, start_server,
                                                                              chaos_report):
    token = annotator_key(chaos_settings)
    meta = [("authorization", f"Bearer {token}")]
    start_server(chaos_settings, "segmentation")
    redis = Redis.from_url(chaos_settings.redis_url)
    with grpc.insecure_channel(chaos_settings.service_address("segmentation")) as channel:
        stub = segmentation_pb2_grpc.SegmentationStub(channel)
        sid = stub.StartSession(pb.StartSessionRequest(project_id="p1", image_data=_png()), metadata=meta,
                                timeout=30).session.session_id
        # the dead server's first step: the session marked finished, nothing sent
        store = SessionStore(redis, lambda: None, chaos_settings.segmentation_session_ttl_s,
                             chaos_settings.segmentation_finished_ttl_s, 0.5, 100)
        _, finished_now = store.finish("p1", sid, "SUBMITTED")
        assert finished_now and redis.llen("byproducts") == 0 and redis.llen("quality") == 0
        reply = stub.FinishSession(pb.FinishSessionRequest(project_id="p1", session_id=sid,
                                                           outcome=common_pb2.SESSION_OUTCOME_SUBMITTED),
                                   metadata=meta, timeout=10)
        again = stub.FinishSession(pb.FinishSessionRequest(project_id="p1", session_id=sid,
                                                           outcome=common_pb2.SESSION_OUTCOME_SUBMITTED),
                                   metadata=meta, timeout=10)
    handed = {queue: int(redis.llen(queue)) for queue in ("byproducts", "quality")}
    row = chaos_report.record("finish-handoff-after-crash", requests=2, client_errors=0,
                              lost=sum(1 for n in handed.values() if n == 0),
                              duplicates=sum(max(0, n - 1) for n in handed.values()), recovery_s=None,
                              messages_queued=handed)
    assert reply.session.state == pb.SEGMENTATION_SESSION_STATE_FINISHED
    assert reply.quality_operation_id and reply.byproducts_operation_id, "the retry hands the session on"
    assert again.quality_operation_id == reply.quality_operation_id, "once handed on, a retry sends nothing"
    assert row["lost"] == 0 and row["duplicates"] == 0, row
