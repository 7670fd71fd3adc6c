"""A project's selection pool scored by region from a task model's predictions, as the training wing's promoted
task model has selection do in a deployment: PutPredictions then StartScoring over gRPC, waited for."""

from __future__ import annotations

import grpc
import numpy as np

from annotation.v1 import common_pb2, operations_pb2, operations_pb2_grpc, selection_pb2, selection_pb2_grpc
from tests.conftest import wait_until


def score_pool(settings, authorization: str, project_id: str, image_ids: list[str], shape: tuple[int, int],
               granularity: int, classes: int = 2, **sizes) -> None:
    """Random probabilities over ``classes`` (background and the labels) of ``shape`` (H, W) for each image, scored
    at ``granularity`` (``sizes``: StartScoring's patch_sizes_px / superpixel_counts); fails unless the scoring
    succeeds."""
    metadata = [("authorization", authorization)]
    height, width = shape
    with grpc.insecure_channel(settings.service_address("selection")) as channel:
        selection = selection_pb2_grpc.SelectionStub(channel)
        rng = np.random.default_rng(0)

        def probabilities() -> selection_pb2.Tensor:
            e = np.exp(rng.normal(size=(classes, height, width)) * 3)
            return selection_pb2.Tensor(shape=[classes, height, width], dtype=selection_pb2.Tensor.FLOAT32,
                                        data=(e / e.sum(axis=0)).astype("<f4").tobytes())

        selection.PutPredictions(iter([selection_pb2.PutPredictionsRequest(
            project_id=project_id, pool_id="default", predictions=[selection_pb2.ItemPrediction(
                item_id=image_id, probabilities=probabilities(), model_version="m:1")])
            for image_id in image_ids]), metadata=metadata)
        op = selection.StartScoring(selection_pb2.StartScoringRequest(
            project_id=project_id, pool_id="default", granularities=[granularity], **sizes), metadata=metadata).operation
        operations = operations_pb2_grpc.OperationsStub(channel)
        done = wait_until(lambda: (o := operations.GetOperation(operations_pb2.GetOperationRequest(
            project_id=project_id, operation_id=op.id), metadata=metadata).operation).state in (
            common_pb2.Operation.SUCCEEDED, common_pb2.Operation.FAILED) and o, 120, "scoring done")
        assert done.state == common_pb2.Operation.SUCCEEDED, done.error
