"""The training service as clients meet it: a real server, a real Celery worker on the ``training`` queue,
real Redis and SQL, and the real tritonserver in explicit model-control mode serving the repository the
worker publishes into. Annotations arrive the way the loop sends them: the Celery task
``training.annotation_submitted`` carrying an ``AnnotationSubmitted``."""

from __future__ import annotations

import json

import grpc
import numpy as np
import pytest
import tritonclient.grpc as triton_grpc

from annotation.v1 import (
    common_pb2,
    operations_pb2,
    segmentation_pb2,
    segmentation_pb2_grpc,
    training_pb2,
)
from services.common import annotation_events
from services.common.celery_app import make_celery
from services.common.image_files import load_image
from services.common.images import encode_png
from services.common.masks import decode_rle, iou
from services.common.storage import make_engine, make_session_factory
from services.models.click_dataset import Sample
from services.models.click_predictor import EncodingConfig, Predictor, torch_network
from services.models.clicker import Clicker
from services.selection.pool import Item, PoolStore
from services.selection.score_store import ScoreStore
from services.training.interactive_model import load_base
from services.training.publishing import triton_model_name
from services.training.snapshots import is_heldout
from tests.conftest import PYTHON, start_service, wait_until
from tests.training.helpers import SCRATCH_BASE, SERVICE_NAMES, event, reviewed, write_project
from tests.training.service_calls import FAST, INTERACTIVE, TASK, P, finished, refused, submit, train

pytestmark = pytest.mark.integration


def test_annotations_to_a_promoted_task_model_served_by_triton(service, tmp_path, spawn):
    stub, admin = service["stub"], service["admin"]
    items = write_project(tmp_path / "images", P, 40)
    submit(service, items)
    # A selection pool of the project's unlabelled images (its classes in another order, one the model never
    # saw) and the selection worker: a promoted task model re-scores it without being asked.
    sessions = make_session_factory(make_engine(service["settings"].resolved_database_url))
    pools = PoolStore(sessions)
    pools.create_pool(P, "pool", "pool", ["background", "dog", "bird", "cat"])
    fresh = write_project(tmp_path / "unlabelled", P, 6, seed=7, id_prefix="u")
    pools.register_items(P, "pool", [Item(a.image_id, "image", a.image_id, a.uri, a.width, a.height)
                                     for a in fresh])
    spawn([PYTHON, "-m", "celery", "-A", "services.selection.worker:app", "worker", "-Q", "selection",
           "-n", "selection-test@%h", "--concurrency", "1", "--without-gossip", "--without-mingle"],
          service["settings"])
    submit(service, items[:3])  # redelivered events change nothing

    made = stub.CreateSnapshot(training_pb2.CreateSnapshotRequest(project_id=P), metadata=admin)
    again = stub.CreateSnapshot(training_pb2.CreateSnapshotRequest(project_id=P), metadata=admin)
    assert made.created and not again.created and again.snapshot.snapshot_id == made.snapshot.snapshot_id
    snapshot = stub.GetSnapshot(training_pb2.GetSnapshotRequest(
        project_id=P, snapshot_id=made.snapshot.snapshot_id, include_entries=True), metadata=admin).snapshot
    assert snapshot.annotation_count == len(snapshot.entries) == 40
    assert list(snapshot.class_names) == ["background", "cat", "dog"]
    assert {e.image.image_id for e in snapshot.entries if e.heldout} == \
        {a.image_id for a in items if is_heldout(P, a.image_id, 20)}

    first = train(service)
    assert first.state == common_pb2.Operation.SUCCEEDED, first.error.message
    assert first.result["state"] == "PROMOTED" and first.result["model_version"] == 1
    assert first.result["snapshot_id"] == made.snapshot.snapshot_id  # nothing new: the same snapshot
    current = stub.GetModelVersion(training_pb2.GetModelVersionRequest(project_id=P, kind=TASK), metadata=admin)
    v1 = current.version
    assert current.current and v1.state == training_pb2.MODEL_STATE_PROMOTED and v1.figures["miou"] > 0.7
    assert v1.parent_version == 0 and json.loads(v1.gate_json)["passed"] and "StartTraining" in v1.command
    name = triton_model_name(P, "task")
    assert v1.triton_model_name == name

    # Selection predicted the pool again with version 1 and scored it; the model's classes on the pool's axis.
    wait_until(lambda: len(ScoreStore(sessions).candidates(P, "pool", "image", 4)) == len(fresh), 120,
               "selection re-scored the pool")
    assert pools.get_pool(P, "pool").predicted_count == len(fresh)
    prediction, _ = pools.prediction(P, "pool", fresh[0].image_id)
    assert prediction.probabilities.shape[0] == 4 and not prediction.probabilities[2].any()  # "bird"
    np.testing.assert_allclose(prediction.probabilities.sum(axis=0), 1, atol=1e-2)
    # the promotion message named the version: the scores (what SelectBatch picks by) say whose they are
    assert ScoreStore(sessions).model_versions(P, "pool", "image", [a.image_id for a in fresh]) == \
        {a.image_id: f"{name}:1" for a in fresh}

    # Triton serves version 1 in the selection task-model contract: K = 3 class probabilities, an embedding.
    client = triton_grpc.InferenceServerClient(service["triton"].grpc_url)
    assert client.is_model_ready(name, "1")
    image = load_image(items[0].uri).astype(np.float32).transpose(2, 0, 1)[None] / 255.0
    request = triton_grpc.InferInput("IMAGE", list(image.shape), "FP32")
    request.set_data_from_numpy(image)
    reply = client.infer(name, [request])
    probabilities = reply.as_numpy("PROBABILITIES")
    assert probabilities.shape == (1, 3, 40, 40) and reply.as_numpy("EMBEDDING").shape == (1, 16)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1, atol=1e-5)

    # A much weaker candidate (2 steps) does not pass the gate; Triton keeps serving version 1.
    weak = train(service, config=training_pb2.TaskModelConfig(steps=2, image_size=32))
    assert weak.state == common_pb2.Operation.SUCCEEDED and weak.result["state"] == "REJECTED"
    assert weak.result["gate"]["current_version"] == 1
    listed = stub.ListModelVersions(training_pb2.ListModelVersionsRequest(project_id=P), metadata=admin)
    assert [v.version for v in listed.versions] == [2, 1] and dict(listed.current) == {"TASK": 1}
    assert client.is_model_ready(name, "1") and not client.is_model_ready(name, "2")

    # Rollback: back on the base model, Triton no longer serves the project's task model.
    rolled = stub.RollbackModelVersion(training_pb2.RollbackModelVersionRequest(
        project_id=P, kind=TASK, reason="test"), metadata=admin)
    assert rolled.rolled_back.version == 1 and not rolled.HasField("current")
    assert not client.is_model_ready(name, "1")
    code, field, _ = refused(lambda: stub.PromoteModelVersion(training_pb2.PromoteModelVersionRequest(
        project_id=P, kind=TASK, version=1), metadata=admin))
    assert (code, field) == (grpc.StatusCode.FAILED_PRECONDITION, "force")
    back = stub.PromoteModelVersion(training_pb2.PromoteModelVersionRequest(
        project_id=P, kind=TASK, version=1, force=True, reason="rolled back by mistake"), metadata=admin).version
    assert back.state == training_pb2.MODEL_STATE_PROMOTED and json.loads(back.gate_json)["forced"]
    assert client.is_model_ready(name, "1")


def test_bad_requests_get_clear_errors_and_one_job_per_project_and_kind(service, tmp_path):
    stub, admin = service["stub"], service["admin"]

    def start(**fields):
        return lambda: stub.StartTraining(training_pb2.StartTrainingRequest(**fields), metadata=admin)

    assert refused(start(project_id="nobody", kind=TASK))[:2] == (grpc.StatusCode.NOT_FOUND, "project_id")
    items = write_project(tmp_path / "images", P, 30)
    submit(service, items)
    assert refused(start(project_id=P))[:2] == (grpc.StatusCode.INVALID_ARGUMENT, "kind")
    assert refused(start(project_id=P, kind=training_pb2.MODEL_KIND_QUALITY, quality=training_pb2.QualityModelConfig(
        members=50)))[:2] == (grpc.StatusCode.INVALID_ARGUMENT, "quality.members")
    assert refused(start(project_id=P, kind=INTERACTIVE, interactive=training_pb2.InteractiveModelConfig(
        crop_size=8)))[:2] == (grpc.StatusCode.INVALID_ARGUMENT, "interactive.crop_size")
    assert refused(start(project_id=P, kind=TASK, task=training_pb2.TaskModelConfig(image_size=8)))[:2] == \
        (grpc.StatusCode.INVALID_ARGUMENT, "task.image_size")
    assert refused(start(project_id=P, kind=TASK, snapshot_id="f" * 32))[:2] == \
        (grpc.StatusCode.NOT_FOUND, "snapshot_id")
    # A project whose only annotations are machine-made: its snapshot would be empty.
    pseudo = [a.__class__(**{**a.__dict__, "project_id": "pseudo", "pseudo_label": True}) for a in items[:4]]
    submit(service, pseudo)
    code, field, message = refused(lambda: stub.CreateSnapshot(training_pb2.CreateSnapshotRequest(
        project_id="pseudo"), metadata=admin))
    assert (code, field) == (grpc.StatusCode.FAILED_PRECONDITION, "project_id") and "empty" in message
    assert refused(start(project_id="pseudo", kind=TASK))[:2] == (grpc.StatusCode.FAILED_PRECONDITION, "project_id")

    # A long job runs (with progress); a second one of the same project and kind is refused, naming it.
    long = stub.StartTraining(training_pb2.StartTrainingRequest(
        project_id=P, kind=TASK, task=training_pb2.TaskModelConfig(steps=100000, image_size=32)),
        metadata=admin).operation
    get = lambda: service["ops"].GetOperation(operations_pb2.GetOperationRequest(
        project_id=P, operation_id=long.id), metadata=admin).operation
    running = wait_until(lambda: (o := get()).state == common_pb2.Operation.RUNNING and o.progress > 0 and o, 120,
                         "the long job reports progress")
    assert running.message.startswith("step ")
    code, field, message = refused(start(project_id=P, kind=TASK, task=FAST))
    assert (code, field) == (grpc.StatusCode.FAILED_PRECONDITION, "kind") and long.id in message
    service["ops"].CancelOperation(operations_pb2.CancelOperationRequest(project_id=P, operation_id=long.id),
                                   metadata=admin)
    assert finished(service, long.id).state == common_pb2.Operation.CANCELLED
    # Cancelled (its worker process killed mid-step), it blocks nothing.
    after = train(service)
    assert after.state == common_pb2.Operation.SUCCEEDED and after.result["state"] == "PROMOTED", after.error.message


CLICKS_FAST = training_pb2.InteractiveModelConfig(iterations=30, crop_size=96, batch_size=4, max_steps=2,
                                                  learning_rate=1e-3, checkpoint_every=10)


def one_click_ious(network, samples) -> list[float]:
    """IoU of each sample's mask after the standard clicker's first click, with the base's click encoding."""
    predictor = Predictor(network, EncodingConfig(size=192, radius=5, with_prior=True))
    out = []
    for sample in samples:
        clicker = Clicker(sample.annotation)
        clicker.next_click(None)
        prob = predictor.predict(sample.image, clicker.clicks, None)
        out.append(iou(prob > 0.5, clicker.gt))
    return out


def test_annotations_fine_tune_the_click_network_which_triton_serves_as_the_project_version(service, tmp_path,
                                                                                           spawn):
    stub, admin = service["stub"], service["admin"]
    items = write_project(tmp_path / "images", P, 30, size=64)
    submit(service, items)

    # One interactive job per project at a time: a long one runs, a second is refused naming it.
    long = stub.StartTraining(training_pb2.StartTrainingRequest(
        project_id=P, kind=INTERACTIVE, interactive=training_pb2.InteractiveModelConfig(iterations=100000,
                                                                                         crop_size=64)),
        metadata=admin).operation
    get = lambda: service["ops"].GetOperation(operations_pb2.GetOperationRequest(
        project_id=P, operation_id=long.id), metadata=admin).operation
    running = wait_until(lambda: (o := get()).state == common_pb2.Operation.RUNNING and o.progress > 0 and o, 180,
                         "the long interactive job reports progress")
    assert running.message.startswith("iteration ")
    code, field, message = refused(lambda: stub.StartTraining(training_pb2.StartTrainingRequest(
        project_id=P, kind=INTERACTIVE, interactive=CLICKS_FAST), metadata=admin))
    assert (code, field) == (grpc.StatusCode.FAILED_PRECONDITION, "kind") and long.id in message
    service["ops"].CancelOperation(operations_pb2.CancelOperationRequest(project_id=P, operation_id=long.id),
                                   metadata=admin)
    assert finished(service, long.id).state == common_pb2.Operation.CANCELLED

    op = stub.StartTraining(training_pb2.StartTrainingRequest(project_id=P, kind=INTERACTIVE, interactive=CLICKS_FAST),
                            metadata=admin).operation
    done = finished(service, op.id, timeout_s=400)
    assert done.state == common_pb2.Operation.SUCCEEDED, done.error.message
    assert done.result["state"] == "PROMOTED" and done.result["kind"] == "INTERACTIVE", done.result
    v1 = stub.GetModelVersion(training_pb2.GetModelVersionRequest(project_id=P, kind=INTERACTIVE),
                              metadata=admin).version
    gate = json.loads(v1.gate_json)
    assert gate["metric"] == "noc85+noc90" and gate["candidate"] < gate["current"] and v1.figures["noc90"] >= 1
    name = triton_model_name(P, "interactive")
    assert v1.triton_model_name == name

    # Triton serves the project's version; one click on each held-out image now returns a better mask than
    # the base network gives for the same click.
    client = triton_grpc.InferenceServerClient(service["triton"].grpc_url)
    assert client.is_model_ready(name, "1")

    def served(batch: np.ndarray) -> np.ndarray:
        request = triton_grpc.InferInput("INPUT", list(batch.shape), "FP32")
        request.set_data_from_numpy(batch.astype(np.float32))
        return client.infer(name, [request]).as_numpy("PROB")

    entries = [e for e in stub.GetSnapshot(training_pb2.GetSnapshotRequest(
        project_id=P, snapshot_id=v1.snapshot_id, include_entries=True), metadata=admin).snapshot.entries if e.heldout]
    samples = [Sample(e.annotation_id, load_image(e.image.uri),
                      decode_rle(list(e.mask.size), e.mask.counts, (e.image.height, e.image.width), "mask")
                      .astype(np.uint8) * 255) for e in entries]
    project_ious = one_click_ious(served, samples)
    base_ious = one_click_ious(torch_network(load_base(SCRATCH_BASE)[0]), samples)
    assert np.mean(project_ious) > np.mean(base_ious) + 0.03, (project_ious, base_ious)

    # The segmentation service serves the project's clicks with its promoted version, unasked (this Triton
    # holds no base model: a session that fell back to it could not answer).
    start_service(spawn, "segmentation", service["settings"].model_copy(update={"segmentation_refine": False}))
    with grpc.insecure_channel(service["settings"].service_address("segmentation")) as channel:
        seg = segmentation_pb2_grpc.SegmentationStub(channel)
        sample = samples[0]
        clicker = Clicker(sample.annotation)
        click = clicker.next_click(None)
        sid = seg.StartSession(segmentation_pb2.StartSessionRequest(
            project_id=P, image_data=encode_png(sample.image)), metadata=admin, timeout=60).session.session_id
        update = seg.AddClick(segmentation_pb2.AddClickRequest(project_id=P, session_id=sid, click=common_pb2.Click(
            x=click.x, y=click.y, positive=click.positive)), metadata=admin, timeout=60).update
    assert update.model_version == f"{name}:1"
    mask = decode_rle(list(update.mask.size), update.mask.counts, sample.image.shape[:2], "mask")
    assert iou(mask, clicker.gt) == pytest.approx(project_ious[0], abs=0.02)


def test_every_n_accepted_annotations_start_a_training_job(triggering_service, tmp_path):
    service, admin = triggering_service, triggering_service["admin"]
    items = write_project(tmp_path / "images", P, 40)
    held = [a for a in items if is_heldout(P, a.image_id, 20)]
    trained = [a for a in items if not is_heldout(P, a.image_id, 20)]
    first_six = trained[:5] + held[:1]

    def send(a) -> dict:
        return service["celery"].send_task("training.annotation_submitted", queue="training",
                                           args=[annotation_events.encode(event(a))]).get(timeout=60)

    assert all(send(a)["triggered"] == [] for a in first_six[:5])
    sixth = send(first_six[5])
    assert sixth["recorded"] and len(sixth["triggered"]) == 1
    op_id = sixth["triggered"][0]
    job = service["ops"].GetOperation(operations_pb2.GetOperationRequest(project_id=P, operation_id=op_id),
                                      metadata=admin).operation
    assert job.kind == "training.train" and job.state in (common_pb2.Operation.PENDING, common_pb2.Operation.RUNNING)
    # Cancelled (its process killed; the worker's one process would train for minutes, events queue behind it).
    service["ops"].CancelOperation(operations_pb2.CancelOperationRequest(project_id=P, operation_id=op_id),
                                   metadata=admin)
    assert finished(service, op_id).state == common_pb2.Operation.CANCELLED
    assert send(first_six[5])["triggered"] == []  # a redelivered event is no new annotation
    # Counted from the snapshot the last job froze (6), however it ended: 7 .. 11 accepted start nothing.
    assert [send(a)["triggered"] for a in trained[5:10]] == [[]] * 5
    again = send(trained[10])["triggered"]  # 12 accepted: 6 since the snapshot; the cancelled job blocks nothing
    assert len(again) == 1 and again != [op_id]
    service["ops"].CancelOperation(operations_pb2.CancelOperationRequest(project_id=P, operation_id=again[0]),
                                   metadata=admin)
    assert finished(service, again[0]).state == common_pb2.Operation.CANCELLED


def test_reviewed_sessions_retrain_the_quality_model_which_the_quality_service_then_scores_with(
        service, tmp_path, spawn):
    stub, admin = service["stub"], service["admin"]
    items = write_project(tmp_path / "images", P, 30)
    submit(service, items)
    # The quality worker scores the project's submitted sessions; which model did is in each score.
    spawn([PYTHON, "-m", "celery", "-A", "services.quality.worker:app", "worker", "-Q", "quality",
           "-n", "quality-test@%h", "--concurrency", "1", "--without-gossip", "--without-mingle"],
          service["settings"])
    quality = make_celery("quality", service["settings"])

    def scored_with(a) -> str:
        return quality.send_task("quality.annotation_submitted", queue="quality",
                                 args=[annotation_events.encode(event(a))]).get(timeout=60)["model_version"]

    shipped = scored_with(items[0])
    code, field, message = refused(lambda: stub.StartTraining(training_pb2.StartTrainingRequest(
        project_id=P, kind=training_pb2.MODEL_KIND_QUALITY), metadata=admin))
    assert (code, field) == (grpc.StatusCode.FAILED_PRECONDITION, "kind") and "0 reviewed sessions" in message
    messages = reviewed([f"img{i:03d}" for i in range(30)], P, names=SERVICE_NAMES)
    results = [service["celery"].send_task("training.session_reviewed", queue="training", args=[m])
               for m in messages]
    assert all(r.get(timeout=60)["session_id"] for r in results)
    bad = service["celery"].send_task("training.session_reviewed", queue="training",
                                      args=[{**messages[0], "true_iou": 2.0}])
    with pytest.raises(Exception, match=r"2.0 is not in \[0, 1\]"):
        bad.get(timeout=60)

    op = stub.StartTraining(training_pb2.StartTrainingRequest(
        project_id=P, kind=training_pb2.MODEL_KIND_QUALITY,
        quality=training_pb2.QualityModelConfig(members=2, epochs=150, hidden=8, learning_rate=0.01)),
        metadata=admin).operation
    done = finished(service, op.id)
    assert done.state == common_pb2.Operation.SUCCEEDED, done.error.message
    assert done.result["state"] == "PROMOTED" and done.result["kind"] == "QUALITY", done.result
    version = stub.GetModelVersion(training_pb2.GetModelVersionRequest(
        project_id=P, kind=training_pb2.MODEL_KIND_QUALITY), metadata=admin).version
    assert version.figures["roc_auc"] > json.loads(version.gate_json)["current"]
    assert version.triton_model_name == ""  # the quality service runs its model itself: nothing in Triton
    # Published to the quality service: the project's sessions are scored with version 1 from now on ...
    wait_until(lambda: scored_with(items[1]) == f"project:{P}:v1", 60, "the quality service scores with version 1")
    # ... until it is rolled back: the shipped model again.
    stub.RollbackModelVersion(training_pb2.RollbackModelVersionRequest(
        project_id=P, kind=training_pb2.MODEL_KIND_QUALITY, reason="test"), metadata=admin)
    wait_until(lambda: scored_with(items[2]) == shipped, 60, "the quality service back on its shipped model")
