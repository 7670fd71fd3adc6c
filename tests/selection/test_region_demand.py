"""Demand for region granularities (issue 22): SelectBatch at a patch size or superpixel count the pool has no scores
for records the spec as wanted; with stored predictions one scoring of it is enqueued at once (and only once while
it is pending), and every promoted task model scores it from then on."""

from __future__ import annotations

import re
import time

import grpc
import numpy as np
import pytest
from PIL import Image

from annotation.v1 import common_pb2, operations_pb2, operations_pb2_grpc, selection_pb2, selection_pb2_grpc
from services.common import service_identity
from services.common.keys import KeyStore, Role
from services.common.storage import make_engine, make_session_factory, migrate
from services.selection.pool import Item, PoolStore
from services.selection.pool_scoring import rescore_project
from services.selection.predictor import ForwardPredictor
from services.selection.region_demand import RegionDemand, ask_for_region
from services.selection.score_store import ScoreStore
from services.selection.scoring import RegionSpec
from tests.conftest import PYTHON, start_service, wait_until
from tests.selection.test_service import P, probs, tensor

H, W = 128, 192  # 2 x 3 patches of 64 px


def _images(tmp_path, rng, n: int, prefix: str = "region") -> list[str]:
    paths = []
    for i in range(n):
        path = tmp_path / f"{prefix}{i}.png"
        Image.fromarray((rng.random((H, W, 3)) * 255).astype(np.uint8)).save(path)
        paths.append(str(path))
    return paths


@pytest.mark.integration
@pytest.mark.parametrize("database", ["sqlite", "postgresql"])
def test_a_region_spec_asked_for_is_scored_from_stored_predictions_once(database, request, settings, spawn, tmp_path):
    if database == "postgresql":
        settings = settings.model_copy(update={"database_url": request.getfixturevalue("postgres_url")})
    migrate(settings.resolved_database_url)
    predicted, fresh = (f"{name}-{time.time_ns() % 10**9}" for name in ("predicted", "fresh"))
    keys = KeyStore(make_session_factory(make_engine(settings.resolved_database_url)), 0)
    admin = [("authorization", f"Bearer {keys.create(f'admin-{time.time_ns()}', Role.ADMIN, [P])[1]}")]
    dialog = service_identity.metadata(service_identity.provision(keys, settings, "dialog"))  # who asks in a deployment
    start_service(spawn, "selection", settings)  # the worker comes later: the scoring stays pending until then
    rng = np.random.default_rng(0)
    with grpc.insecure_channel(settings.service_address("selection")) as channel:
        stub, ops = selection_pb2_grpc.SelectionStub(channel), operations_pb2_grpc.OperationsStub(channel)
        for pool in (predicted, fresh):
            stub.CreatePool(selection_pb2.CreatePoolRequest(project_id=P, pool_id=pool,
                                                            class_names=["background", "object"]), metadata=admin)
            stub.RegisterItems(selection_pb2.RegisterItemsRequest(project_id=P, pool_id=pool, items=[
                selection_pb2.PoolItem(item_id=f"im{i}", kind=selection_pb2.ITEM_KIND_IMAGE,
                                       image=common_pb2.ImageRef(image_id=f"im{i}", uri=f"file://{path}"))
                for i, path in enumerate(_images(tmp_path, rng, 3, pool))]), metadata=admin)
        stub.PutPredictions(iter([selection_pb2.PutPredictionsRequest(project_id=P, pool_id=predicted, predictions=[
            selection_pb2.ItemPrediction(item_id=f"im{i}", probabilities=tensor(probs(rng, H, W)),
                                         ensemble_members=[tensor(probs(rng, H, W)), tensor(probs(rng, H, W))],
                                         model_version="m:1") for i in range(3)])]), metadata=admin)

        def select(pool: str, **spec) -> selection_pb2.SelectBatchResponse:
            return stub.SelectBatch(selection_pb2.SelectBatchRequest(project_id=P, pool_id=pool, budget=2, **spec),
                                    metadata=dialog)

        def refused(pool: str, **spec) -> str:
            with pytest.raises(grpc.RpcError) as err:
                select(pool, **spec)
            assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION, err.value.details()
            return err.value.details()

        def score_ops() -> list[common_pb2.Operation]:
            return list(ops.ListOperations(operations_pb2.ListOperationsRequest(
                project_id=P, kind="selection.score_pool"), metadata=admin).operations)

        patch64 = {"granularity": common_pb2.GRANULARITY_PATCH, "patch_size_px": 64}
        first = refused(predicted, **patch64)
        assert "patch:64" in first and "being scored" in first, first
        op_id = re.search(r"operation (\w+)", first).group(1)
        again = refused(predicted, **patch64)  # still pending: the same operation, nothing sent twice
        assert f"operation {op_id}" in again, again
        assert [o.id for o in score_ops()] == [op_id]

        # No task model has predicted this pool: wanted, but nothing to score it from yet.
        unpredicted = refused(fresh, granularity=common_pb2.GRANULARITY_SUPERPIXEL, n_superpixels=6)
        assert "superpixel:6" in unpredicted and "task model" in unpredicted, unpredicted
        assert [o.id for o in score_ops()] == [op_id]

        spawn([PYTHON, "-m", "celery", "-A", "services.selection.worker:app", "worker", "-Q", "selection",
               "-n", "selection-demand@%h", "--concurrency", "1", "--without-gossip", "--without-mingle"], settings)

        def get() -> common_pb2.Operation:
            return ops.GetOperation(operations_pb2.GetOperationRequest(project_id=P, operation_id=op_id),
                                    metadata=admin).operation
        final = wait_until(lambda: (o := get()).state in (common_pb2.Operation.SUCCEEDED, common_pb2.Operation.FAILED)
                           and o, 60, "the enqueued scoring done")
        assert final.state == common_pb2.Operation.SUCCEEDED, final.error
        assert final.result["items_scored"] == 3

        batch = select(predicted, **patch64)
        assert len(batch.regions) == 2 and batch.candidates_considered == 3 * 6
        assert all(r.region.WhichOneof("kind") == "patch" and r.region.patch.size_px == 64 for r in batch.regions)
        assert {r.model_version for r in batch.regions} == {"m:1"}  # the scores' predictions were m:1's
        assert [o.id for o in score_ops()] == [op_id]  # scores found: nothing more enqueued


class Constant(ForwardPredictor):
    """A stand-in task model: random but fixed logits per image size, two classes."""

    def forward(self, x, dropout):
        rng = np.random.default_rng(int(dropout))
        logits = rng.normal(size=(len(x), 2, *x.shape[2:])).astype(np.float32) * 3
        e = np.exp(logits)
        return e / e.sum(axis=1, keepdims=True), None


@pytest.mark.unit
def test_rescore_after_a_task_model_scores_the_wanted_specs_never_scored(tmp_path):
    url = f"sqlite:///{tmp_path / 'selection.sqlite'}"
    migrate(url)
    sessions = make_session_factory(make_engine(url))
    pools, scores, demand = PoolStore(sessions), ScoreStore(sessions), RegionDemand(sessions)
    pools.create_pool(P, "pool", "", ["background", "object"])
    pools.register_items(P, "pool", [Item(f"im{i}", image_id=f"im{i}", uri=f"file://{path}")
                                     for i, path in enumerate(_images(tmp_path, np.random.default_rng(1), 2))])
    # Asked for before any task model: recorded, nothing enqueued (no stored predictions to score from).
    sent = []
    asked = ask_for_region(demand, pools, P, "pool", RegionSpec("patch", 64), lambda: "op-1", lambda op: True,
                           lambda op, spec: sent.append((op, spec)))
    assert asked.state == "after_task_model" and sent == []
    assert scores.region_keys(P, "pool") == []

    out = rescore_project(pools, scores, demand, P, Constant(mc_samples=2), ["background", "object"])
    assert out["pools"]["pool"]["items_scored"] == 2
    assert scores.region_keys(P, "pool") == ["image", "patch:64"]
    assert len(scores.candidates(P, "pool", "patch:64", 2)) == 2 * 6

    # With predictions stored now: enqueued once, then pending while the first is running.
    asked = ask_for_region(demand, pools, P, "pool", RegionSpec("patch", 32), lambda: "op-2", lambda op: True,
                           lambda op, spec: sent.append((op, spec)))
    assert (asked.state, asked.operation_id) == ("enqueued", "op-2") and sent == [("op-2", RegionSpec("patch", 32))]
    asked = ask_for_region(demand, pools, P, "pool", RegionSpec("patch", 32), lambda: "op-3", lambda op: True,
                           lambda op, spec: sent.append((op, spec)))
    assert (asked.state, asked.operation_id) == ("pending", "op-2") and len(sent) == 1
    asked = ask_for_region(demand, pools, P, "pool", RegionSpec("patch", 32), lambda: "op-4", lambda op: False,
                           lambda op, spec: sent.append((op, spec)))  # the first one finished (or was lost)
    assert asked.state == "enqueued" and sent[-1] == ("op-4", RegionSpec("patch", 32))
    assert demand.wanted(P, "pool") == [RegionSpec("patch", 32), RegionSpec("patch", 64)]


@pytest.mark.integration
def test_selected_regions_name_the_promoted_task_model_their_scores_came_from(settings, spawn, tmp_path):
    """What ``selection.task_model_promoted`` does with the promoted version (``rescore_project`` with a predictor
    of that ``model_version``): SelectBatch's regions carry the version whose predictions they were scored from."""
    migrate(settings.resolved_database_url)
    sessions = make_session_factory(make_engine(settings.resolved_database_url))
    keys = KeyStore(sessions, 0)
    admin = [("authorization", f"Bearer {keys.create(f'admin-{time.time_ns()}', Role.ADMIN, [P])[1]}")]
    pools, scores, demand = PoolStore(sessions), ScoreStore(sessions), RegionDemand(sessions)
    pools.create_pool(P, "pool", "", ["background", "object"])
    pools.register_items(P, "pool", [Item(f"im{i}", image_id=f"im{i}", uri=f"file://{path}")
                                     for i, path in enumerate(_images(tmp_path, np.random.default_rng(2), 3))])
    start_service(spawn, "selection", settings)
    with grpc.insecure_channel(settings.service_address("selection")) as channel:
        stub = selection_pb2_grpc.SelectionStub(channel)

        def versions() -> set[str]:
            batch = stub.SelectBatch(selection_pb2.SelectBatchRequest(project_id=P, pool_id="pool", budget=3),
                                     metadata=admin)
            assert len(batch.regions) == 3
            return {r.model_version for r in batch.regions}

        assert versions() == {""}  # no task model yet: a uniform draw, from no model's scores
        for version in ("task-p:3", "task-p:4"):
            rescore_project(pools, scores, demand, P, Constant(model_version=version), ["background", "object"])
            assert versions() == {version}
