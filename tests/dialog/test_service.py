"""The dialog service as clients meet it: a real server, a real Celery worker, real Redis and SQLite."""

from __future__ import annotations

import time

import grpc
import numpy as np
import pytest
from celery import Celery
from grpc_status import rpc_status
from pycocotools import mask as mask_utils

from annotation.v1 import common_pb2, dialog_pb2, dialog_pb2_grpc
from services.common import annotation_events
from services.common.keys import KeyStore, Role
from services.common.storage import make_engine, make_session_factory, migrate
from services.dialog.store import DialogStore
from tests.conftest import PYTHON, start_service, wait_until

pytestmark = pytest.mark.integration
P = "p1"


@pytest.fixture
def service(settings, spawn):
    migrate(settings.resolved_database_url)
    store = KeyStore(make_session_factory(make_engine(settings.resolved_database_url)), 0)
    keys = {role: store.create(f"{role.name}-{time.time_ns()}", role, [P])[1]
            for role in (Role.ANNOTATOR, Role.REVIEWER)}
    annotator_id = store.verify(keys[Role.ANNOTATOR]).key_id  # an annotator's key names only itself
    start_service(spawn, "dialog", settings)
    spawn([PYTHON, "-m", "celery", "-A", "services.dialog.worker:app", "worker", "-Q", "dialog",
           "-n", "dialog-test@%h", "--concurrency", "1", "--without-gossip", "--without-mingle"], settings)
    with grpc.insecure_channel(settings.service_address("dialog")) as channel:
        yield {"stub": dialog_pb2_grpc.DialogStub(channel),
               "annotator": [("authorization", f"Bearer {keys[Role.ANNOTATOR]}")],
               "reviewer": [("authorization", f"Bearer {keys[Role.REVIEWER]}")], "annotator_id": annotator_id}


def error_of(call) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as info:
        call()
    status = rpc_status.from_call(info.value)
    field = ""
    if status is not None and status.details:
        detail = common_pb2.ErrorDetail()
        status.details[0].Unpack(detail)
        field = detail.field
    return info.value.code(), field


def proposal_mask() -> common_pb2.Mask:
    mask = np.zeros((40, 60), np.uint8)
    mask[10:30, 15:45] = 1
    rle = mask_utils.encode(np.asfortranarray(mask))
    return common_pb2.Mask(size=[40, 60], counts=rle["counts"].decode("ascii"))


def candidates() -> dialog_pb2.CandidateList:
    image = common_pb2.ImageRef(image_id="im1", width=60, height=40)
    return dialog_pb2.CandidateList(candidates=[
        dialog_pb2.Candidate(region=common_pb2.Region(image_id="im0", whole_image=common_pb2.Region.WholeImage()),
                             image=common_pb2.ImageRef(image_id="im0", width=60, height=40), selection_score=0.9),
        dialog_pb2.Candidate(region=common_pb2.Region(image_id="im1", whole_image=common_pb2.Region.WholeImage()),
                             image=image, selection_score=0.9, proposal_mask=proposal_mask(), proposal_score=0.95,
                             proposed_label="cat", features={"mean_confidence": 0.97}),
    ])


def test_question_answer_follow_up_and_learning(service):
    stub, ann, rev, a1 = service["stub"], service["annotator"], service["reviewer"], service["annotator_id"]
    policies = stub.ListPolicies(dialog_pb2.ListPoliciesRequest(), metadata=ann).policies
    assert [p.name for p in policies if p.is_default] == ["greedy"]
    assert {"always_segment", "verify_k_then_segment"} <= {p.name for p in policies}

    first = stub.NextQuestion(dialog_pb2.NextQuestionRequest(project_id=P, annotator_id=a1,
                                                             candidates=candidates()), metadata=ann).question
    # the confident proposal is cheaper to verify than segmenting the other image from scratch
    assert first.type == dialog_pb2.QUESTION_TYPE_VERIFY and first.image.image_id == "im1"
    assert first.proposal_mask.counts and first.proposed_label == "cat" and first.policy == "greedy"
    assert list(first.plan)[0] == dialog_pb2.QUESTION_TYPE_VERIFY and first.plan[-1] == dialog_pb2.QUESTION_TYPE_SEGMENT
    assert 0 < first.acceptance_probability < 1 and first.expected_seconds > 0 and "p_accept" in first.reason
    assert first.gain_per_second == pytest.approx(first.expected_gain / first.expected_seconds)

    second = stub.NextQuestion(dialog_pb2.NextQuestionRequest(project_id=P, annotator_id=a1,
                                                              candidates=candidates()), metadata=ann).question
    assert second.type == dialog_pb2.QUESTION_TYPE_SEGMENT and second.image.image_id == "im0"
    assert stub.NextQuestion(dialog_pb2.NextQuestionRequest(project_id=P, candidates=candidates()),
                             metadata=ann).exhausted

    assert error_of(lambda: stub.RecordAnswer(dialog_pb2.RecordAnswerRequest(
        project_id=P, question_id=first.question_id, annotator_id=a1, seconds_taken=2.0,
        segment=dialog_pb2.SegmentAnswer(click_count=2)), metadata=ann)) == (grpc.StatusCode.INVALID_ARGUMENT, "answer")
    reply = stub.RecordAnswer(dialog_pb2.RecordAnswerRequest(
        project_id=P, question_id=first.question_id, annotator_id=a1, seconds_taken=2.1,
        verify=dialog_pb2.VerifyAnswer(accepted=False)), metadata=ann)
    follow = reply.follow_up
    assert follow.type == dialog_pb2.QUESTION_TYPE_SEGMENT and follow.image.image_id == "im1"
    assert follow.question_id != first.question_id and "follow-up" in follow.reason
    assert error_of(lambda: stub.RecordAnswer(dialog_pb2.RecordAnswerRequest(
        project_id=P, question_id=first.question_id, annotator_id=a1, seconds_taken=1.0,
        verify=dialog_pb2.VerifyAnswer(accepted=True)), metadata=ann))[0] == grpc.StatusCode.FAILED_PRECONDITION
    done = stub.RecordAnswer(dialog_pb2.RecordAnswerRequest(
        project_id=P, question_id=follow.question_id, annotator_id=a1, seconds_taken=7.5,
        segment=dialog_pb2.SegmentAnswer(mask=proposal_mask(), label="cat", click_count=3)), metadata=ann)
    assert not done.HasField("follow_up")

    def learned():
        costs = stub.GetCostModel(dialog_pb2.GetCostModelRequest(project_id=P, annotator_id=a1), metadata=rev)
        verify = next(c for c in costs.costs if c.type == dialog_pb2.QUESTION_TYPE_VERIFY)
        return verify.project_estimate.observations == 1 and verify.annotator_estimate.observations == 1
    wait_until(learned, 30, "the worker refitted the models")
    costs = stub.GetCostModel(dialog_pb2.GetCostModelRequest(project_id=P), metadata=rev)
    verify = next(c for c in costs.costs if c.type == dialog_pb2.QUESTION_TYPE_VERIFY)
    assert verify.prior.seconds == pytest.approx(1.8) and "Konyushkova" in verify.prior.source
    assert verify.project_estimate.mean_seconds == pytest.approx(2.1)
    assert verify.effective_seconds == pytest.approx(1.8)  # one answer is not enough to replace the prior
    segment = next(c for c in costs.costs if c.type == dialog_pb2.QUESTION_TYPE_SEGMENT)
    assert "expected_clicks" in segment.prior.formula and costs.seconds_per_click > 0


def test_errors_name_the_field(service, settings):
    stub, ann = service["stub"], service["annotator"]
    assert error_of(lambda: stub.NextQuestion(dialog_pb2.NextQuestionRequest(project_id=P), metadata=ann)) \
        == (grpc.StatusCode.INVALID_ARGUMENT, "source")
    bad = candidates()
    bad.candidates[0].selection_score = 2.0
    assert error_of(lambda: stub.NextQuestion(dialog_pb2.NextQuestionRequest(project_id=P, candidates=bad),
                                              metadata=ann)) \
        == (grpc.StatusCode.INVALID_ARGUMENT, "candidates.candidates[0].selection_score")
    bad = candidates()
    bad.candidates[1].proposal_mask.counts = "\x01not rle"
    assert error_of(lambda: stub.NextQuestion(dialog_pb2.NextQuestionRequest(project_id=P, candidates=bad),
                                              metadata=ann))[0] == grpc.StatusCode.INVALID_ARGUMENT
    assert error_of(lambda: stub.NextQuestion(dialog_pb2.NextQuestionRequest(
        project_id=P, candidates=candidates(), policy="nope"), metadata=ann)) == (grpc.StatusCode.INVALID_ARGUMENT, "policy")
    assert error_of(lambda: stub.RecordAnswer(dialog_pb2.RecordAnswerRequest(
        project_id=P, question_id="missing", seconds_taken=1.0, skip=dialog_pb2.SkipAnswer()), metadata=ann)) \
        == (grpc.StatusCode.NOT_FOUND, "question_id")
    assert error_of(lambda: stub.GetCostModel(dialog_pb2.GetCostModelRequest(project_id=P), metadata=ann))[0] \
        == grpc.StatusCode.PERMISSION_DENIED
    # candidates from a selection pool: the selection service is not running here
    assert error_of(lambda: stub.NextQuestion(dialog_pb2.NextQuestionRequest(
        project_id=P, pool=dialog_pb2.PoolReference(pool_id="pool")), metadata=ann))[0] == grpc.StatusCode.UNAVAILABLE
    # a client that shows only SEGMENT gets a segment question about the proposal's image too
    q = stub.NextQuestion(dialog_pb2.NextQuestionRequest(project_id=P, candidates=candidates(),
                                                         allowed_types=[dialog_pb2.QUESTION_TYPE_SEGMENT]),
                          metadata=ann).question
    assert q.type == dialog_pb2.QUESTION_TYPE_SEGMENT


def segment_event(question: dialog_pb2.Question, annotator_id: str, annotation_id: str, seconds: float,
                  outcome: int = common_pb2.SESSION_OUTCOME_SUBMITTED) -> dict:
    """What the segmentation service's FinishSession sends to ``dialog.annotation_submitted``."""
    event = common_pb2.AnnotationSubmitted(
        project_id=P, annotation_id=annotation_id, session_id=annotation_id, task_id="task-1",
        question_id=question.question_id, annotator_id=annotator_id, outcome=outcome,
        image=common_pb2.ImageRef(image_id=question.image.image_id, width=60, height=40), label="cat",
        mask=proposal_mask(), clicks=[common_pb2.Click(x=20, y=20, positive=True, t_ms=1500, index=0),
                                      common_pb2.Click(x=2, y=2, positive=False, t_ms=3000, index=1)],
        total_time_ms=int(seconds * 1000), model_version="clickseg:1")
    return annotation_events.encode(event)


def test_a_finished_session_answers_its_question_once(service, settings):
    stub, ann, a1 = service["stub"], service["annotator"], service["annotator_id"]
    celery = Celery(broker=settings.redis_url, backend=settings.redis_url)

    def ask() -> dialog_pb2.Question:
        return stub.NextQuestion(dialog_pb2.NextQuestionRequest(
            project_id=P, annotator_id=a1, candidates=candidates(), allowed_types=[dialog_pb2.QUESTION_TYPE_SEGMENT]),
            metadata=ann).question

    def send(payload: dict):
        result = celery.send_task("dialog.annotation_submitted", args=[payload], queue="dialog")
        result.get(timeout=30, propagate=False)
        return result

    segment, skipped = ask(), ask()
    assert segment.type == skipped.type == dialog_pb2.QUESTION_TYPE_SEGMENT
    first = send(segment_event(segment, a1, "sess-1", 6.0))
    assert first.state == "SUCCESS" and first.result["recorded"] and first.result["kind"] == "segment"
    again = send(segment_event(segment, a1, "sess-1", 6.0))  # a redelivery, or a retried FinishSession
    assert again.state == "SUCCESS" and not again.result["recorded"]
    other = send(segment_event(segment, a1, "sess-2", 9.0))  # another session for the answered question
    assert other.state == "FAILURE" and "answered already" in other.traceback
    assert send(segment_event(skipped, "someone-else", "sess-3", 2.0)).state == "FAILURE"  # not their question
    skip = send(segment_event(skipped, a1, "sess-4", 2.0, common_pb2.SESSION_OUTCOME_SKIPPED))
    assert skip.state == "SUCCESS" and skip.result["kind"] == "skip"
    malformed = send({**segment_event(skipped, a1, "sess-5", 2.0), "question_id": "q" * 200})
    assert malformed.state == "FAILURE" and "InvalidEvent: question_id:" in malformed.traceback, malformed.traceback

    store = DialogStore(make_session_factory(make_engine(settings.resolved_database_url)))
    answered = store.get(P, segment.question_id)
    assert (answered.answer_kind, answered.seconds_taken, answered.clicks, answered.answered_by) == ("segment", 6.0, 2, a1)
    assert answered.answer["annotation_id"] == "sess-1" and answered.answer["label"] == "cat"
    assert store.get(P, skipped.question_id).answer == {"reason": "skipped", "byproducts_session_id": "sess-4",
                                                         "annotation_id": "sess-4"}
    assert store.model(P, a1, "cost").observations == 1  # refitted from the one segment answer (a skip is none)
