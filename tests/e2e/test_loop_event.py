"""The loop's fan-out end to end: one FinishSession on the real segmentation server (real tritonserver) reaches
the real workers of byproducts, quality, dialog, selection and training through Celery on real Redis, and
each stores its effect once; a repeated FinishSession stores nothing more."""

from __future__ import annotations

import io
import time

import grpc
import pytest
from PIL import Image
from sqlalchemy import func, select

from annotation.v1 import common_pb2, dialog_pb2, dialog_pb2_grpc, segmentation_pb2, segmentation_pb2_grpc
from services.byproducts.tables import EventRow
from services.common.keys import KeyStore, Role
from services.common.storage import make_engine, make_session_factory, migrate
from services.dialog.tables import QuestionRow
from services.quality.tables import ScoredSessionRow
from services.selection.pool import Item, PoolStore
from services.selection.tables import ItemRow, LabelRow
from services.training.tables import AnnotationRow
from tests.conftest import PYTHON, SHARED_DATA, start_service, wait_until

pytestmark = pytest.mark.integration
P = "p1"
IMAGE = SHARED_DATA / "grabcut" / "images" / "124080.jpg"
QUEUES = ("byproducts", "quality", "dialog", "selection", "training")


@pytest.fixture
def platform(settings, triton_server, spawn):
    settings = settings.model_copy(update={"triton_grpc_url": triton_server.grpc_url,
                                           "triton_http_port": triton_server.http_port})
    migrate(settings.resolved_database_url)
    keys = KeyStore(make_session_factory(make_engine(settings.resolved_database_url)), 0)
    token = keys.create(f"ann-{time.time_ns()}", Role.ANNOTATOR, [P])[1]
    for service in ("segmentation", "dialog"):
        start_service(spawn, service, settings)
    workers = {queue: spawn([PYTHON, "-m", "celery", "-A", f"services.{queue}.worker:app", "worker", "-Q", queue,
                             "-n", f"{queue}-loop@%h", "--concurrency", "1", "--without-gossip", "--without-mingle",
                             "-l", "WARNING"], settings) for queue in QUEUES}
    with grpc.insecure_channel(settings.service_address("segmentation")) as seg, \
            grpc.insecure_channel(settings.service_address("dialog")) as dialog:
        yield {"seg": segmentation_pb2_grpc.SegmentationStub(seg), "dialog": dialog_pb2_grpc.DialogStub(dialog),
               "meta": [("authorization", f"Bearer {token}")], "annotator": keys.verify(token).key_id,
               "settings": settings, "workers": workers}


def effects(engine, session_id: str, question_id: str) -> dict[str, int]:
    """How many times each wing stored the annotation (for byproducts: its events)."""
    with engine.connect() as db:
        def count(query) -> int:
            return db.scalar(select(func.count()).select_from(query.subquery()))
        return {
            "byproducts": count(select(EventRow).where(EventRow.session_id == session_id)),
            "quality": count(select(ScoredSessionRow).where(ScoredSessionRow.session_id == session_id)),
            "dialog": count(select(QuestionRow).where(QuestionRow.question_id == question_id,
                                                      QuestionRow.answered_at.is_not(None))),
            "selection": count(select(LabelRow).where(LabelRow.annotation_id == session_id)),
            "training": count(select(AnnotationRow).where(AnnotationRow.annotation_id == session_id)),
        }


def test_one_finish_session_reaches_every_wing_once(platform):
    seg, meta, settings = platform["seg"], platform["meta"], platform["settings"]
    engine = make_engine(settings.resolved_database_url)
    image = Image.open(IMAGE).convert("RGB").resize((160, 120))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    pools = PoolStore(make_session_factory(engine))
    pools.create_pool(P, "default", "", ["background", "flower"])
    pools.register_items(P, "default", [Item("124080", image_id="124080", width=160, height=120)])
    question = platform["dialog"].NextQuestion(dialog_pb2.NextQuestionRequest(
        project_id=P, annotator_id=platform["annotator"], allowed_types=[dialog_pb2.QUESTION_TYPE_SEGMENT],
        candidates=dialog_pb2.CandidateList(candidates=[dialog_pb2.Candidate(
            region=common_pb2.Region(image_id="124080", whole_image=common_pb2.Region.WholeImage()),
            image=common_pb2.ImageRef(image_id="124080", width=160, height=120), selection_score=0.9)])),
        metadata=meta, timeout=30).question

    sid = "loop-1"
    seg.StartSession(segmentation_pb2.StartSessionRequest(
        project_id=P, session_id=sid, image_data=buffer.getvalue(), task_id="task-1", label="flower",
        question_id=question.question_id, image=common_pb2.ImageRef(image_id="124080", uri=IMAGE.resolve().as_uri())),
        metadata=meta, timeout=60)
    for i, (x, y, positive) in enumerate([(75, 62, True), (10, 10, False)]):
        seg.AddClick(segmentation_pb2.AddClickRequest(project_id=P, session_id=sid, click=common_pb2.Click(
            x=x, y=y, positive=positive, t_ms=1100 * (i + 1))), metadata=meta, timeout=60)
    finish = segmentation_pb2.FinishSessionRequest(project_id=P, session_id=sid,
                                                   outcome=common_pb2.SESSION_OUTCOME_SUBMITTED)
    first = seg.FinishSession(finish, metadata=meta, timeout=60)
    assert first.quality_operation_id and first.byproducts_operation_id
    once = {"byproducts": 5, "quality": 1, "dialog": 1, "selection": 1, "training": 1}  # 5: start, 2 clicks, submit, end
    try:
        wait_until(lambda: effects(engine, sid, question.question_id) == once, 120, "every wing stored the event")
    except TimeoutError:
        logs = "\n".join(f"--- {q}\n{w.output()[-1500:]}" for q, w in platform["workers"].items())
        pytest.fail(f"{effects(engine, sid, question.question_id)} != {once}\n{logs}")
    # A client's retry answers the same operations; that it sends nothing is checked on the queues themselves
    # (tests/segmentation/test_service.py), where no worker races the count; here the stored effects stay once.
    again = seg.FinishSession(finish, metadata=meta, timeout=60)
    assert (again.quality_operation_id, again.byproducts_operation_id) == \
        (first.quality_operation_id, first.byproducts_operation_id)
    assert effects(engine, sid, question.question_id) == once
    with engine.connect() as db:
        assert db.scalar(select(ItemRow.labelled).where(ItemRow.item_id == "124080"))
        stored = db.execute(select(AnnotationRow.label, AnnotationRow.uri, AnnotationRow.model_version)).one()
    assert stored.label == "flower" and stored.uri == IMAGE.resolve().as_uri() and stored.model_version.startswith(f"{settings.triton_model_name}:")
