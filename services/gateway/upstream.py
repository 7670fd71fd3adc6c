"""The gateway's gRPC clients: one channel per service, the caller's own key forwarded, and gRPC
status codes mapped back to domain errors (so REST answers 422 / 404 / 503 as DESIGN.md says).

The services check the key again (their auth interceptor): the gateway is not a trusted proxy.
"""

from __future__ import annotations

import threading

import grpc
from grpc_status import rpc_status

from annotation.v1 import (
    byproducts_pb2_grpc,
    common_pb2,
    dialog_pb2_grpc,
    quality_pb2_grpc,
    segmentation_pb2_grpc,
    selection_pb2_grpc,
    training_pb2_grpc,
    video_pb2_grpc,
)
from services.common import errors
from services.common.settings import Settings

STUBS = {
    "segmentation": segmentation_pb2_grpc.SegmentationStub,
    "selection": selection_pb2_grpc.SelectionStub,
    "byproducts": byproducts_pb2_grpc.ByproductsStub,
    "quality": quality_pb2_grpc.QualityStub,
    "dialog": dialog_pb2_grpc.DialogStub,
    "video": video_pb2_grpc.VideoStub,
    "training": training_pb2_grpc.TrainingStub,
}

_CODES: dict[grpc.StatusCode, type[errors.DomainError]] = {
    grpc.StatusCode.NOT_FOUND: errors.NotFound,
    grpc.StatusCode.ALREADY_EXISTS: errors.AlreadyExists,
    grpc.StatusCode.FAILED_PRECONDITION: errors.FailedPrecondition,
    grpc.StatusCode.UNAUTHENTICATED: errors.Unauthenticated,
    grpc.StatusCode.PERMISSION_DENIED: errors.PermissionDenied,
    grpc.StatusCode.RESOURCE_EXHAUSTED: errors.ResourceExhausted,
    grpc.StatusCode.UNAVAILABLE: errors.Unavailable,
    grpc.StatusCode.DEADLINE_EXCEEDED: errors.DeadlineExceeded,
}


class NotImplementedYet(errors.Unavailable):
    """The service answers UNIMPLEMENTED: its behaviour has not landed. REST shows it as 503."""


def domain_error(service: str, exc: grpc.RpcError) -> errors.DomainError:
    """The domain error for a failed call, keeping the service's field, message and every ErrorDetail."""
    code, message = exc.code(), exc.details() or ""
    details = []
    status = rpc_status.from_call(exc) if hasattr(exc, "trailing_metadata") else None
    for packed in status.details if status else ():
        unpacked = common_pb2.ErrorDetail()
        if packed.Unpack(unpacked):
            details.append({"field": unpacked.field, "reason": unpacked.reason, "message": unpacked.message})
    field = next((detail["field"] for detail in details if detail["field"]), "")
    error = _error_for(service, code, message, field)
    error.details = details
    return error


def _error_for(service: str, code: grpc.StatusCode, message: str, field: str) -> errors.DomainError:
    if code == grpc.StatusCode.INVALID_ARGUMENT:
        return errors.InvalidArgument(field or "request", message)
    if code == grpc.StatusCode.UNIMPLEMENTED:
        return NotImplementedYet(f"the {service} service has not implemented this yet ({message})")
    if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
        message = f"the {service} service is unavailable: {message}"
    cls = _CODES.get(code, errors.DomainError)
    return cls(message or code.name, field=field)


class Upstream:
    """Lazily opened channels to the services; ``call(service, method, request, key)``."""

    def __init__(self, settings: Settings, timeout_s: float) -> None:
        self.settings = settings
        self.timeout_s = timeout_s
        self._channels: dict[str, grpc.Channel] = {}
        self._stubs: dict[str, object] = {}
        self._lock = threading.Lock()

    def stub(self, service: str):
        with self._lock:
            if service not in self._stubs:
                limit = self.settings.grpc_max_message_mb << 20
                channel = grpc.insecure_channel(self.settings.service_address(service), options=[
                    ("grpc.max_receive_message_length", limit), ("grpc.max_send_message_length", limit)])
                self._channels[service] = channel
                self._stubs[service] = STUBS[service](channel)
            return self._stubs[service]

    def call(self, service: str, method: str, request, key: str, timeout_s: float | None = None):
        rpc = getattr(self.stub(service), method)
        try:
            return rpc(request, timeout=timeout_s or self.timeout_s,
                       metadata=[("authorization", f"Bearer {key}")])
        except grpc.RpcError as exc:
            raise domain_error(service, exc) from None

    def stream(self, service: str, method: str, request, key: str, timeout_s: float | None = None):
        """A server-streaming call; errors surface on iteration as domain errors."""
        rpc = getattr(self.stub(service), method)
        try:
            yield from rpc(request, timeout=timeout_s or self.timeout_s,
                           metadata=[("authorization", f"Bearer {key}")])
        except grpc.RpcError as exc:
            raise domain_error(service, exc) from None

    def close(self) -> None:
        with self._lock:
            for channel in self._channels.values():
                channel.close()
            self._channels.clear()
            self._stubs.clear()
