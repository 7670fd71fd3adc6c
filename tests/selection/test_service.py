"""The selection service as clients meet it: a real server, a real Celery worker, real Redis and SQL."""

from __future__ import annotations

import time

import grpc
import numpy as np
import pytest
from celery import Celery
from grpc_status import rpc_status
from PIL import Image
from sqlalchemy import select

from annotation.v1 import (
    common_pb2,
    operations_pb2,
    operations_pb2_grpc,
    selection_pb2,
    selection_pb2_grpc,
)
from services.common import annotation_events
from services.common.keys import KeyStore, Role
from services.common.masks import encode_rle
from services.common.storage import make_engine, make_session_factory, migrate
from services.selection.tables import LabelRow
from tests.conftest import PYTHON, start_service, wait_until

pytestmark = pytest.mark.integration
P = "p1"


def tensor(a: np.ndarray) -> selection_pb2.Tensor:
    return selection_pb2.Tensor(shape=list(a.shape), dtype=selection_pb2.Tensor.FLOAT32,
                                data=a.astype("<f4").tobytes())


def probs(rng, h=32, w=48):
    e = np.exp(rng.normal(size=(2, h, w)) * 3)
    return e / e.sum(axis=0)


@pytest.fixture(params=["sqlite", "postgresql"])
def service(request, settings, spawn, tmp_path):
    if request.param == "postgresql":
        settings = settings.model_copy(update={"database_url": request.getfixturevalue("postgres_url")})
    migrate(settings.resolved_database_url)
    store = KeyStore(make_session_factory(make_engine(settings.resolved_database_url)), 0)
    admin = store.create(f"admin-{time.time_ns()}", Role.ADMIN, [P])[1]
    annotator = store.create(f"ann-{time.time_ns()}", Role.ANNOTATOR, [P])[1]
    start_service(spawn, "selection", settings)
    spawn([PYTHON, "-m", "celery", "-A", "services.selection.worker:app", "worker", "-Q", "selection",
           "-n", "selection-test@%h", "--concurrency", "1", "--without-gossip", "--without-mingle"], settings)
    with grpc.insecure_channel(settings.service_address("selection")) as channel:
        yield {"stub": selection_pb2_grpc.SelectionStub(channel), "ops": operations_pb2_grpc.OperationsStub(channel),
               "admin": [("authorization", f"Bearer {admin}")],
               "annotator": [("authorization", f"Bearer {annotator}")],
               "pool": f"pool-{request.param}-{time.time_ns() % 10**9}", "tmp": tmp_path, "settings": settings}


def field_of(err: grpc.RpcError) -> str:
    detail = common_pb2.ErrorDetail()
    rpc_status.from_call(err).details[0].Unpack(detail)
    return detail.field


def test_pool_predictions_scoring_selection_labels_and_propagation(service):
    stub, admin, pool = service["stub"], service["admin"], service["pool"]
    rng = np.random.default_rng(0)
    created = stub.CreatePool(selection_pb2.CreatePoolRequest(project_id=P, pool_id=pool,
                                                              class_names=["background", "object"]), metadata=admin)
    assert created.pool.pool_id == pool
    items = []
    for i in range(6):
        path = service["tmp"] / f"im{i}.png"
        Image.fromarray((rng.random((32, 48, 3)) * 255).astype(np.uint8)).save(path)
        items.append(selection_pb2.PoolItem(item_id=f"im{i}", kind=selection_pb2.ITEM_KIND_IMAGE,
                                            image=common_pb2.ImageRef(image_id=f"im{i}", uri=f"file://{path}"),
                                            image_labels=[1]))
    reply = stub.RegisterItems(selection_pb2.RegisterItemsRequest(project_id=P, pool_id=pool, items=items),
                               metadata=admin)
    assert (reply.registered, reply.already_present) == (6, 0)

    def messages():
        for i in range(6):
            p = probs(rng)
            yield selection_pb2.PutPredictionsRequest(project_id=P, pool_id=pool, predictions=[
                selection_pb2.ItemPrediction(
                    item_id=f"im{i}", probabilities=tensor(p), ensemble_members=[tensor(probs(rng)), tensor(probs(rng))],
                    augmented=[selection_pb2.AugmentedPrediction(
                        transform=selection_pb2.AugmentedPrediction.HORIZONTAL_FLIP, probabilities=tensor(probs(rng)))],
                    embedding=list(rng.normal(size=4)), model_version="m:1")])

    stored = stub.PutPredictions(messages(), metadata=admin)
    assert stored.stored == 6

    op = stub.StartScoring(selection_pb2.StartScoringRequest(
        project_id=P, pool_id=pool, granularities=[common_pb2.GRANULARITY_IMAGE, common_pb2.GRANULARITY_PATCH,
                                                   common_pb2.GRANULARITY_SUPERPIXEL],
        patch_sizes_px=[16], superpixel_counts=[10]), metadata=admin).operation
    get = lambda: service["ops"].GetOperation(operations_pb2.GetOperationRequest(  # noqa: E731
        project_id=P, operation_id=op.id), metadata=admin).operation
    final = wait_until(lambda: (o := get()).state in (common_pb2.Operation.SUCCEEDED, common_pb2.Operation.FAILED)
                       and o, 60, "scoring done")
    assert final.state == common_pb2.Operation.SUCCEEDED, final.error
    assert final.result["items_scored"] == 6 and final.result["regions_scored"] > 6 + 36

    batch = stub.SelectBatch(selection_pb2.SelectBatchRequest(
        project_id=P, pool_id=pool, strategy="combined", granularity=common_pb2.GRANULARITY_PATCH, patch_size_px=16,
        budget=4), metadata=admin)
    assert len(batch.regions) == 4 and batch.candidates_considered == 36
    assert [r.rank for r in batch.regions] == [1, 2, 3, 4]
    assert batch.regions[0].score >= batch.regions[-1].score and "combined" in batch.regions[0].reason
    assert set(batch.regions[0].breakdown) == {"entropy", "vote_entropy", "js_divergence", "ensemble_l2",
                                               "self_consistency", "combined"}
    top = batch.regions[0]
    assert top.region.WhichOneof("kind") == "patch" and top.box.width == 16

    superpixels = stub.SelectBatch(selection_pb2.SelectBatchRequest(
        project_id=P, pool_id=pool, strategy="uncertainty_diversity", granularity=common_pb2.GRANULARITY_SUPERPIXEL,
        n_superpixels=10, budget=3, seed=4), metadata=admin)
    assert len(superpixels.regions) == 3
    from pycocotools import mask as mask_utils  # noqa: PLC0415
    for r in superpixels.regions:
        decoded = mask_utils.decode({"size": list(r.mask.size), "counts": r.mask.counts.encode()})
        assert decoded.shape == (32, 48) and decoded.sum() == r.area_px

    # Labelling the top patch removes it from later batches; labelling an item removes all its regions.
    stub.ReportLabels(selection_pb2.ReportLabelsRequest(project_id=P, pool_id=pool, labels=[
        selection_pb2.LabelledItem(item_id=top.item_id, region=top.region),
        selection_pb2.LabelledItem(item_id="im0", class_labels=[1])]), metadata=service["annotator"])
    again = stub.SelectBatch(selection_pb2.SelectBatchRequest(
        project_id=P, pool_id=pool, strategy="combined", granularity=common_pb2.GRANULARITY_PATCH, patch_size_px=16,
        budget=4), metadata=admin)
    chosen = {(r.item_id, r.region.patch.row, r.region.patch.col) for r in again.regions}
    assert (top.item_id, top.region.patch.row, top.region.patch.col) not in chosen
    assert all(r.item_id != "im0" for r in again.regions)
    assert stub.GetPool(selection_pb2.GetPoolRequest(project_id=P, pool_id=pool), metadata=admin).pool.labelled_count == 1

    listed = stub.ListScores(selection_pb2.ListScoresRequest(project_id=P, pool_id=pool, strategy="entropy",
                                                             page=common_pb2.PageRequest(page_size=3)), metadata=admin)
    assert len(listed.scores) == 3 and listed.page.total_size == 5 and listed.page.next_page_token
    assert listed.scores[0].score >= listed.scores[1].score
    got = stub.GetScore(selection_pb2.GetScoreRequest(project_id=P, pool_id=pool, item_id="im1"), metadata=admin)
    assert {s.strategy for s in got.scores} >= {"entropy", "combined"}

    found = stub.FindPropagationCandidates(selection_pb2.FindPropagationCandidatesRequest(
        project_id=P, pool_id=pool, item_id="im0", class_index=1, k=3, feature_weight=0.1), metadata=admin)
    assert len(found.candidates) == 3 and "im0" not in {c.item_id for c in found.candidates}
    distances = [c.distance for c in found.candidates]
    assert distances == sorted(distances) and 0 <= found.candidates[0].histogram_js_divergence <= np.log(2)

    names = {s.name for s in stub.ListStrategies(selection_pb2.ListStrategiesRequest(), metadata=admin).strategies}
    assert {"uniform", "uniform_bottom_n", "score_band", "entropy", "uncertainty_diversity", "combined"} <= names


def test_bad_input_is_invalid_argument_naming_the_field(service):
    stub, admin, pool = service["stub"], service["admin"], service["pool"]
    stub.CreatePool(selection_pb2.CreatePoolRequest(project_id=P, pool_id=pool, class_names=["bg", "obj"]),
                    metadata=admin)
    stub.RegisterItems(selection_pb2.RegisterItemsRequest(project_id=P, pool_id=pool, items=[
        selection_pb2.PoolItem(item_id="a", kind=selection_pb2.ITEM_KIND_IMAGE,
                               image=common_pb2.ImageRef(image_id="a"))]), metadata=admin)
    rng = np.random.default_rng(1)
    good, bad = probs(rng), probs(rng) * 0.8

    def stream(p2, shape_bad=False):
        yield selection_pb2.PutPredictionsRequest(project_id=P, pool_id=pool, predictions=[
            selection_pb2.ItemPrediction(item_id="a", probabilities=tensor(good))])
        t = tensor(p2)
        if shape_bad:
            t.shape[:] = [2, 16, 48]
        yield selection_pb2.PutPredictionsRequest(project_id=P, pool_id=pool, predictions=[
            selection_pb2.ItemPrediction(item_id="a", probabilities=t)])

    for p2, shape_bad, field in ((bad, False, "predictions[1].probabilities"),
                                 (good, True, "predictions[1].probabilities.data")):
        with pytest.raises(grpc.RpcError) as err:
            stub.PutPredictions(stream(p2, shape_bad), metadata=admin)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and field_of(err.value) == field
    # The first message of the refused stream was kept.
    assert stub.GetPool(selection_pb2.GetPoolRequest(project_id=P, pool_id=pool), metadata=admin).pool.predicted_count == 1

    op = stub.StartScoring(selection_pb2.StartScoringRequest(project_id=P, pool_id=pool), metadata=admin).operation
    wait_until(lambda: service["ops"].GetOperation(operations_pb2.GetOperationRequest(
        project_id=P, operation_id=op.id), metadata=admin).operation.state == common_pb2.Operation.SUCCEEDED,
        60, "scoring done")
    for request, field in (
            (dict(strategy="nope", budget=1), "strategy"),
            (dict(strategy="entropy", budget=2), "budget"),
            (dict(strategy="entropy", budget=1, granularity=common_pb2.GRANULARITY_PATCH), "patch_size_px"),
            # bounded as StartScoring's sizes: a region spec asked for gets scored
            (dict(strategy="entropy", budget=1, granularity=common_pb2.GRANULARITY_PATCH, patch_size_px=100001),
             "patch_size_px"),
            (dict(strategy="entropy", budget=1, granularity=common_pb2.GRANULARITY_SUPERPIXEL, n_superpixels=100001),
             "n_superpixels"),
            (dict(strategy="score_band", budget=1, params={"nope": 1}), "params.nope")):
        with pytest.raises(grpc.RpcError) as err:
            stub.SelectBatch(selection_pb2.SelectBatchRequest(project_id=P, pool_id=pool, **request), metadata=admin)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and field_of(err.value) == field, request
    with pytest.raises(grpc.RpcError) as err:  # an annotator may not select
        stub.SelectBatch(selection_pb2.SelectBatchRequest(project_id=P, pool_id=pool, strategy="entropy", budget=1),
                         metadata=service["annotator"])
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED


def test_a_submitted_annotation_labels_its_image_in_every_pool_once(service):
    """``selection.annotation_submitted``: what ReportLabels does for a client, from the loop's event."""
    stub, admin, pool, settings = service["stub"], service["admin"], service["pool"], service["settings"]
    pools = {pool: ["background", "cat"], f"{pool}-b": ["background", "dog"]}
    for pool_id, classes in pools.items():
        stub.CreatePool(selection_pb2.CreatePoolRequest(project_id=P, pool_id=pool_id, class_names=classes),
                        metadata=admin)
        stub.RegisterItems(selection_pb2.RegisterItemsRequest(project_id=P, pool_id=pool_id, items=[
            selection_pb2.PoolItem(item_id=f"{pool_id}-{i}", kind=selection_pb2.ITEM_KIND_IMAGE,
                                   image=common_pb2.ImageRef(image_id=f"{pool}-im{i}", width=48, height=32))
            for i in range(3)]),
            metadata=admin)
    mask = np.zeros((32, 48), bool)
    mask[8:20, 10:30] = True
    size, counts = encode_rle(mask)
    event = common_pb2.AnnotationSubmitted(
        project_id=P, annotation_id="sess-1", session_id="sess-1", annotator_id="ann-1", label="cat",
        image=common_pb2.ImageRef(image_id=f"{pool}-im1", width=48, height=32),  # the database may hold other tests'
        mask=common_pb2.Mask(size=size, counts=counts),
        clicks=[common_pb2.Click(x=20, y=12, positive=True, t_ms=700)], outcome=common_pb2.SESSION_OUTCOME_SUBMITTED)
    event.submit_time.FromSeconds(1_800_000_000)
    celery = Celery(broker=settings.redis_url, backend=settings.redis_url)

    def send(payload: dict):
        result = celery.send_task("selection.annotation_submitted", args=[payload], queue="selection")
        result.get(timeout=30, propagate=False)
        return result

    payload = annotation_events.encode(event)
    first, again = send(payload), send(payload)
    assert first.state == again.state == "SUCCESS", first.traceback
    assert first.result["pools"] == {pool: True, f"{pool}-b": True}
    assert again.result["pools"] == {pool: False, f"{pool}-b": False}  # a redelivery records nothing
    for pool_id in pools:
        info = stub.GetPool(selection_pb2.GetPoolRequest(project_id=P, pool_id=pool_id), metadata=admin).pool
        assert info.labelled_count == 1
    with make_session_factory(make_engine(settings.resolved_database_url))() as db:
        rows = db.scalars(select(LabelRow).where(LabelRow.project_id == P, LabelRow.pool_id.in_(pools))
                          .order_by(LabelRow.pool_id)).all()
    assert [(r.pool_id, r.item_id, r.class_labels, r.annotation_id) for r in rows] == \
        [(pool, f"{pool}-1", [1], "sess-1"), (f"{pool}-b", f"{pool}-b-1", [], "sess-1")]  # "cat" is no class of -b
    assert rows[0].mask == {"size": size, "counts": counts} and rows[0].annotator_id == "ann-1"

    nowhere = send({**payload, "annotation_id": "sess-2", "image": {"image_id": f"{pool}-im9", "width": 48, "height": 32}})
    assert nowhere.state == "SUCCESS" and nowhere.result["pools"] == {}  # an image no pool holds: a normal case
    malformed = send({**payload, "annotation_id": "sess-3", "mask": {"size": [32, 49], "counts": counts}})
    assert malformed.state == "FAILURE" and "InvalidEvent: mask.size:" in malformed.traceback, malformed.traceback
    skipped = send({**payload, "annotation_id": "sess-4", "outcome": "SESSION_OUTCOME_SKIPPED"})
    assert skipped.state == "FAILURE" and "InvalidEvent: outcome:" in skipped.traceback  # not an annotation
