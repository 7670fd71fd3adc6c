"""Scoring with a task model served by the real tritonserver (StartScoring.triton_model).

The example task model (deploy/triton/examples/selection-task-model) is exported into a temporary
model repository and served by its own tritonserver; a real selection server and Celery worker score
COCO-MVal images through it. The scores must equal those of the same TorchScript network run
in-process through ``TorchPredictor``: the Triton path computes the same thing.
"""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch

from annotation.v1 import common_pb2, operations_pb2, selection_pb2
from services.common.image_files import load_image
from services.common.storage import make_engine, make_session_factory
from services.selection.export_task_model import export
from services.selection.pool import PoolStore
from services.selection.predictor import TorchPredictor, TritonPredictor
from services.selection.scoring import RegionSpec, score_predictions
from tests.conftest import SHARED_DATA, Triton, wait_until
from tests.selection.test_service import P, service  # noqa: F401 - the selection server + worker fixture

pytestmark = pytest.mark.integration
IMAGES = sorted((SHARED_DATA / "train" / "coco_mval" / "images").glob("*.jpg"))[::200][:3]
MODEL = "selection_task"
SPECS = [RegionSpec("image"), RegionSpec("patch", 128)]


@pytest.fixture(scope="module")
def task_triton(tmp_path_factory):
    """tritonserver on a repository holding only the exported example task model."""
    repository = tmp_path_factory.mktemp("task-models")
    export(repository, MODEL, seed=0)
    server = Triton(tmp_path_factory.mktemp("task-triton"), model_repository=repository)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def settings(settings, task_triton):
    """The worker calls the task-model Triton."""
    return settings.model_copy(update={"triton_grpc_url": task_triton.grpc_url})


@pytest.fixture(scope="module")
def network(task_triton):
    return torch.jit.load(str(task_triton.model_repository / MODEL / "1" / "model.pt"))


def pool_with_images(service) -> str:  # noqa: F811
    stub, admin, pool = service["stub"], service["admin"], service["pool"]
    assert len(IMAGES) == 3, "COCO-MVal images missing under ../shared/data/train/coco_mval/images"
    stub.CreatePool(selection_pb2.CreatePoolRequest(project_id=P, pool_id=pool, class_names=["background", "object"]),
                    metadata=admin)
    stub.RegisterItems(selection_pb2.RegisterItemsRequest(project_id=P, pool_id=pool, items=[
        selection_pb2.PoolItem(item_id=path.stem, kind=selection_pb2.ITEM_KIND_IMAGE,
                               image=common_pb2.ImageRef(image_id=path.stem, uri=path.as_uri()))
        for path in IMAGES]), metadata=admin)
    return pool


def score(service, pool: str, model: str, timeout_s: float = 120) -> common_pb2.Operation:  # noqa: F811
    op = service["stub"].StartScoring(selection_pb2.StartScoringRequest(
        project_id=P, pool_id=pool, granularities=[common_pb2.GRANULARITY_IMAGE, common_pb2.GRANULARITY_PATCH],
        patch_sizes_px=[128], triton_model=model), metadata=service["admin"]).operation
    get = lambda: service["ops"].GetOperation(operations_pb2.GetOperationRequest(  # noqa: E731
        project_id=P, operation_id=op.id), metadata=service["admin"]).operation
    return wait_until(lambda: (o := get()).state in (common_pb2.Operation.SUCCEEDED, common_pb2.Operation.FAILED)
                      and o, timeout_s, "scoring done")


@pytest.mark.parametrize("service", ["sqlite"], indirect=True)
def test_triton_scores_equal_the_in_process_network(service, settings, task_triton, network):  # noqa: F811
    stub, admin = service["stub"], service["admin"]
    pool = pool_with_images(service)
    final = score(service, pool, MODEL)
    assert final.state == common_pb2.Operation.SUCCEEDED, final.error.message
    assert final.result["items_scored"] == 3

    # The reference: the same TorchScript network in-process, with the worker's predictor settings.
    images = [load_image(path.as_uri()) for path in IMAGES]
    reference = [TorchPredictor(network).predict(image) for image in images]
    stored = PoolStore(make_session_factory(make_engine(settings.resolved_database_url)))
    for path, expected in zip(IMAGES, reference):
        got = stored.prediction(P, pool, path.stem)[0]  # stored as float16 maps, float32 embedding
        assert got.probabilities.shape == expected.probabilities.shape == (2, *load_image(path.as_uri()).shape[:2])
        np.testing.assert_allclose(got.probabilities, expected.probabilities, atol=1e-3)
        np.testing.assert_allclose(got.augmented, expected.augmented, atol=1e-3)
        assert got.members is None  # the worker asks for no MC-dropout members
        np.testing.assert_allclose(got.embedding, expected.embedding, rtol=1e-5, atol=1e-6)
    per_item = score_predictions(reference, SPECS, images=images)

    for spec_index, (granularity, size) in enumerate(((common_pb2.GRANULARITY_IMAGE, 0),
                                                      (common_pb2.GRANULARITY_PATCH, 128))):
        expected = {(path.stem, *map(int, s.boxes[r])): {h: float(v[r]) for h, v in s.scores.items()
                                                           if np.isfinite(v[r])}
                    for path, item in zip(IMAGES, per_item) for s in [item[spec_index]] for r in range(len(s))}
        batch = stub.SelectBatch(selection_pb2.SelectBatchRequest(
            project_id=P, pool_id=pool, strategy="combined", granularity=granularity, patch_size_px=size,
            budget=len(expected)), metadata=admin)
        assert batch.candidates_considered == len(batch.regions) == len(expected)
        for region in batch.regions:
            breakdown = expected[(region.item_id, int(region.box.x), int(region.box.y), int(region.box.width),
                                  int(region.box.height))]
            assert set(region.breakdown) == set(breakdown) == {"entropy", "self_consistency", "combined"}
            for name, value in breakdown.items():
                assert region.breakdown[name] == pytest.approx(value, abs=1e-5), (region.item_id, name)
            assert region.score == pytest.approx(breakdown["combined"], abs=1e-5)
        ranked = sorted((b["combined"] for b in expected.values()), reverse=True)
        np.testing.assert_allclose([r.score for r in batch.regions], ranked, atol=1e-5)


def test_dropout_input_gives_mc_dropout_members(task_triton, network):
    """The DROPOUT input of the example model: members from dropout, the plain pass unchanged."""
    image = load_image(IMAGES[0].as_uri())
    got = TritonPredictor(task_triton.grpc_url, MODEL, mc_samples=3).predict(image)
    expected = TorchPredictor(network, mc_samples=3).predict(image)
    assert got.members.shape == expected.members.shape == (3, 2, *image.shape[:2])
    np.testing.assert_allclose(got.members.sum(axis=1), 1, atol=1e-5)
    for members in (got.members, expected.members):  # dropout is on in every member, on both paths
        assert (np.abs(members - expected.probabilities).max(axis=(1, 2, 3)) > 1e-5).all()
    np.testing.assert_allclose(got.probabilities, expected.probabilities, atol=1e-5)
    np.testing.assert_allclose(got.embedding, expected.embedding, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("service", ["sqlite"], indirect=True)
def test_unknown_model_or_triton_down_fails_the_operation(service, task_triton):  # noqa: F811
    pool = pool_with_images(service)
    start = time.monotonic()
    final = score(service, pool, "no_such_model", timeout_s=60)
    assert final.state == common_pb2.Operation.FAILED
    assert "Unavailable" in final.error.message and "'no_such_model'" in final.error.message
    assert "unknown model" in final.error.message

    task_triton.stop()
    try:
        final = score(service, pool, MODEL, timeout_s=60)
        assert final.state == common_pb2.Operation.FAILED
        assert "Unavailable" in final.error.message and task_triton.grpc_url in final.error.message
        assert time.monotonic() - start < 60  # failed fast, not hung on a dead server
    finally:
        task_triton.start()
