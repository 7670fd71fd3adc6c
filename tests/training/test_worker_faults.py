"""The training worker's faults as an operator meets them: kill -9 of the worker in the middle of a job, and
a new version loading into Triton while clients infer with the old one. Real processes throughout (the
``redelivering_service`` fixture: training server, Celery worker, Redis, SQL, tritonserver in explicit
model-control mode)."""

from __future__ import annotations

import re
import signal
import threading

import numpy as np
import pytest
import torch
import tritonclient.grpc as triton_grpc

from annotation.v1 import common_pb2, operations_pb2, training_pb2
from services.common.image_files import load_image
from services.training.job_context import checkpoint_path
from services.training.publishing import triton_model_name
from tests.conftest import wait_until
from tests.training.conftest import start_worker
from tests.training.helpers import write_project
from tests.training.service_calls import TASK, P, submit, train

pytestmark = [pytest.mark.integration, pytest.mark.timeout(1200)]
STEP = re.compile(r"step (\d+)/")


def test_kill_9_mid_job_resumes_from_the_checkpoint_and_promotes_once_then_a_new_version_loads_while_served(
        redelivering_service, tmp_path, spawn):
    service = redelivering_service
    stub, admin, settings = service["stub"], service["admin"], service["settings"]
    items = write_project(tmp_path / "images", P, 40)
    submit(service, items)

    steps = 400  # enough that the kill lands mid-job and the resumed half outlives the 5 s visibility timeout
    slow = training_pb2.TaskModelConfig(steps=steps, image_size=32, batch_size=8, checkpoint_every=50)
    op = stub.StartTraining(training_pb2.StartTrainingRequest(project_id=P, kind=TASK, task=slow),
                            metadata=admin).operation
    get = lambda: service["ops"].GetOperation(operations_pb2.GetOperationRequest(
        project_id=P, operation_id=op.id), metadata=admin).operation

    def step_of(message: str) -> int:
        found = STEP.search(message)
        return int(found.group(1)) if found else -1

    wait_until(lambda: step_of(get().message) >= 150, 300, "the job passed three checkpoints")
    service["worker"].stop(signal.SIGKILL)  # the whole process group: main process and pool child
    checkpoint = checkpoint_path(settings.var_dir, op.id)
    saved = int(torch.load(checkpoint, weights_only=True)["step"])
    assert 150 <= saved < steps and get().state == common_pb2.Operation.RUNNING  # nobody finished it

    start_worker(spawn, settings, "training-second")
    seen: list[str] = []

    def done():
        operation = get()
        seen.append(operation.message)
        return operation.state in (common_pb2.Operation.SUCCEEDED, common_pb2.Operation.FAILED) and operation

    result = wait_until(done, 600, "the redelivered job finished", interval_s=0.02)
    assert result.state == common_pb2.Operation.SUCCEEDED, result.error.message
    assert result.result["state"] == "PROMOTED" and result.result["model_version"] == 1, result.result
    # The second worker went on from the checkpoint: it never reported a step the first one had saved.
    reported = [step for step in map(step_of, seen) if step >= 0]
    assert reported and min(reported) >= saved, (saved, reported[:10])
    # Redelivered again (the 5 s visibility timeout passes during the job): nothing is promoted twice.
    listed = stub.ListModelVersions(training_pb2.ListModelVersionsRequest(project_id=P), metadata=admin)
    assert [v.version for v in listed.versions] == [1] and dict(listed.current) == {"TASK": 1}
    assert not checkpoint.parent.exists()

    # Triton keeps answering while a new version of the project's model loads: a forced promotion of a weak
    # candidate swaps versions under a client inferring without pause.
    weak = train(service, config=training_pb2.TaskModelConfig(steps=2, image_size=32))
    assert weak.result["state"] == "REJECTED" and weak.result["model_version"] == 2
    name = triton_model_name(P, "task")
    client = triton_grpc.InferenceServerClient(service["triton"].grpc_url)
    image = load_image(items[0].uri).astype(np.float32).transpose(2, 0, 1)[None] / 255.0
    request = triton_grpc.InferInput("IMAGE", list(image.shape), "FP32")
    request.set_data_from_numpy(image)
    before = client.infer(name, [request]).as_numpy("PROBABILITIES")
    answers, errors, stop = [], [], threading.Event()

    def infer_without_pause():
        while not stop.is_set():
            try:
                answers.append(client.infer(name, [request]).as_numpy("PROBABILITIES"))
            except Exception as exc:  # noqa: BLE001 (every failure is what this test counts)
                errors.append(repr(exc))

    clicker = threading.Thread(target=infer_without_pause, daemon=True)
    clicker.start()
    try:
        wait_until(lambda: len(answers) >= 5, 60, "answers before the swap")
        promoted = stub.PromoteModelVersion(training_pb2.PromoteModelVersionRequest(
            project_id=P, kind=TASK, version=2, force=True, reason="swap under load"), metadata=admin).version
        assert promoted.state == training_pb2.MODEL_STATE_PROMOTED
        count = len(answers)
        wait_until(lambda: len(answers) >= count + 5, 60, "answers after the swap")
    finally:
        stop.set()
        clicker.join(30)
    assert errors == [], errors[:3]
    assert client.is_model_ready(name, "2") and not client.is_model_ready(name, "1")
    assert np.allclose(answers[0], before) and not np.allclose(answers[-1], before)  # the swap happened
