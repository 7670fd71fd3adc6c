"""gRPC adapter of ``annotation.v1.Operations``, hosted by every service's server."""

from __future__ import annotations

import time

from celery import Celery
from celery.exceptions import TimeoutError as CeleryTimeout
from google.protobuf import struct_pb2
from redis import Redis
from redis.exceptions import RedisError

from annotation.v1 import common_pb2, operations_pb2, operations_pb2_grpc
from services.common.errors import InvalidArgument, Unavailable
from services.common.operations import OperationRecord, OperationStore, status_from_task
from services.common.proto_time import to_timestamp
from services.common.request_context import time_remaining

PROBE_DEFAULT_MS = 5000


def operation_proto(record: OperationRecord, celery: Celery) -> common_pb2.Operation:
    """The Operation message of ``record``, its state read from the task's result backend."""
    task = celery.AsyncResult(record.id)
    status = status_from_task(task.state, task.info)
    done = task.date_done.timestamp() if task.date_done else time.time()
    result = struct_pb2.Struct()
    result.update(status.result)
    return common_pb2.Operation(
        id=record.id, kind=record.kind, project_id=record.project_id,
        state=common_pb2.Operation.State.Value(status.state), progress=status.progress,
        message=status.message, create_time=to_timestamp(record.create_time),
        update_time=to_timestamp(done), result=result if status.result else None,
        error=common_pb2.ErrorDetail(reason="TASK_FAILED", message=status.error) if status.error else None,
    )


class OperationsServicer(operations_pb2_grpc.OperationsServicer):
    def __init__(self, service: str, store: OperationStore, celery: Celery, redis: Redis) -> None:
        self._service, self._store, self._celery, self._redis = service, store, celery, redis

    def _to_proto(self, record: OperationRecord) -> common_pb2.Operation:
        return operation_proto(record, self._celery)

    def GetOperation(self, request, context):
        record = self._store.get(request.operation_id, request.project_id)
        return operations_pb2.GetOperationResponse(operation=self._to_proto(record))

    def ListOperations(self, request, context):
        records, next_token, total = self._store.list(
            request.project_id, request.page.page_size, request.page.page_token)
        operations = [self._to_proto(r) for r in records if not request.kind or r.kind == request.kind]
        if request.states:
            operations = [op for op in operations if op.state in request.states]
        return operations_pb2.ListOperationsResponse(
            operations=operations, page=common_pb2.PageInfo(next_page_token=next_token, total_size=total))

    def CancelOperation(self, request, context):
        record = self._store.get(request.operation_id, request.project_id)
        self._celery.control.revoke(record.id, terminate=True)
        return operations_pb2.CancelOperationResponse(operation=self._to_proto(record))

    def ProbeQueue(self, request, context):
        wait_s = min((request.timeout_ms or PROBE_DEFAULT_MS) / 1000, time_remaining(PROBE_DEFAULT_MS / 1000))
        if wait_s <= 0:
            raise InvalidArgument("timeout_ms", "no time left before the call's deadline")
        start = time.perf_counter()
        try:
            task = self._celery.send_task(f"{self._service}.probe", queue=self._service)
            answer = task.get(timeout=wait_s)
            depth = self._redis.llen(self._service)
        except CeleryTimeout:
            raise Unavailable(f"no worker consumed queue {self._service!r} within {wait_s * 1000:.0f} ms")
        # RuntimeError: what Celery's result backend raises once its reconnect policy is spent (a
        # broker that refuses the publish is mapped by the error interceptor)
        except (RedisError, OSError, RuntimeError) as exc:
            raise Unavailable(f"broker unreachable: {exc.__class__.__name__}")
        return operations_pb2.ProbeQueueResponse(
            queue=answer["queue"], worker_hostname=answer["hostname"], worker_pid=answer["pid"],
            task_id=task.id, round_trip_ms=(time.perf_counter() - start) * 1000, queue_depth=depth)
