"""Calls on a running training service (the ``service`` fixture of conftest.py) as its clients make them."""

from __future__ import annotations

import grpc
import pytest
from grpc_status import rpc_status

from annotation.v1 import common_pb2, operations_pb2, training_pb2
from services.common import annotation_events
from tests.conftest import wait_until
from tests.training.helpers import event

P = "proj-loop"
TASK = training_pb2.MODEL_KIND_TASK
INTERACTIVE = training_pb2.MODEL_KIND_INTERACTIVE
FAST = training_pb2.TaskModelConfig(steps=120, image_size=32, batch_size=8, checkpoint_every=40)


def submit(service, annotations) -> None:
    """Sends each annotation as the loop does and waits until the worker stored it."""
    results = [service["celery"].send_task("training.annotation_submitted", queue="training",
                                           args=[annotation_events.encode(event(a))]) for a in annotations]
    for result in results:
        assert result.get(timeout=60)["recorded"] in (True, False)


def refused(call) -> tuple[grpc.StatusCode, str, str]:
    with pytest.raises(grpc.RpcError) as error:
        call()
    detail = common_pb2.ErrorDetail()
    rpc_status.from_call(error.value).details[0].Unpack(detail)
    return error.value.code(), detail.field, error.value.details()


def finished(service, op_id: str, project: str = P, timeout_s: float = 240) -> common_pb2.Operation:
    get = lambda: service["ops"].GetOperation(operations_pb2.GetOperationRequest(
        project_id=project, operation_id=op_id), metadata=service["admin"]).operation
    done = (common_pb2.Operation.SUCCEEDED, common_pb2.Operation.FAILED, common_pb2.Operation.CANCELLED)
    return wait_until(lambda: (o := get()).state in done and o, timeout_s, "training job finished")


def train(service, project: str = P, config: training_pb2.TaskModelConfig = FAST) -> common_pb2.Operation:
    op = service["stub"].StartTraining(training_pb2.StartTrainingRequest(project_id=project, kind=TASK, task=config),
                                       metadata=service["admin"]).operation
    assert op.kind == "training.train" and op.state == common_pb2.Operation.PENDING
    return finished(service, op.id, project)
