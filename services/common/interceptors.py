"""Server interceptors shared by every gRPC service: metrics, error mapping, authentication.

Each wraps the method handler's behaviour, so one implementation covers unary and streaming calls.
Order on the server: metrics (outermost, sees every final code) -> errors -> auth -> servicer.
"""

from __future__ import annotations

import functools
import logging
import time
import uuid
from collections.abc import Callable

import grpc
from google.protobuf import any_pb2, descriptor_pool
from google.protobuf.message import DecodeError
from google.rpc import status_pb2
from grpc_status import rpc_status
from kombu.exceptions import OperationalError as KombuOperationalError
from prometheus_client import Counter, Histogram
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from annotation.v1 import common_pb2
from services.common.errors import (
    DomainError,
    InvalidArgument,
    PermissionDenied,
    Unauthenticated,
)
from services.common.keys import ALL_PROJECTS, KeyStore, Role
from services.common.request_context import set_deadline, set_principal

log = logging.getLogger(__name__)

# Infrastructure services anyone may call (Kubernetes probes, grpcurl-style discovery).
PUBLIC_SERVICES = frozenset({
    "grpc.health.v1.Health",
    "grpc.reflection.v1alpha.ServerReflection",
    "grpc.reflection.v1.ServerReflection",
})

# Raised wherever a server touches Redis or publishes a task while Redis is down.
BROKER_DOWN = (RedisConnectionError, RedisTimeoutError, KombuOperationalError)

STARTED = Counter("grpc_server_started_total", "RPCs started.", ["grpc_service", "grpc_method"])
HANDLED = Counter("grpc_server_handled_total", "RPCs completed, by status code.",
                  ["grpc_service", "grpc_method", "grpc_code"])
LATENCY = Histogram("grpc_server_handling_seconds", "RPC handling time in seconds.",
                    ["grpc_service", "grpc_method"],
                    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30))


def _split(method: str) -> tuple[str, str]:
    service, _, name = method.lstrip("/").partition("/")
    return service, name


def _wrap(handler: grpc.RpcMethodHandler, around: Callable) -> grpc.RpcMethodHandler:
    """Replace the handler's behaviour by ``around(behavior, request_streaming, response_streaming)``."""
    kind = ("stream" if handler.request_streaming else "unary") + "_" + (
        "stream" if handler.response_streaming else "unary")
    behavior = around(getattr(handler, kind), handler.request_streaming, handler.response_streaming)
    return handler._replace(**{kind: behavior})


def _aborted(context: grpc.ServicerContext) -> bool:
    code = context.code()
    return code is not None and code != grpc.StatusCode.OK


class MetricsInterceptor(grpc.ServerInterceptor):
    def intercept_service(self, continuation, details):
        handler = continuation(details)
        if handler is None:
            return None
        service, method = _split(details.method)

        def around(behavior, streaming_request, streaming_response):
            def record(context, start, failed):
                code = context.code() or (grpc.StatusCode.OK if not failed else grpc.StatusCode.UNKNOWN
                                          if context.is_active() else grpc.StatusCode.CANCELLED)
                HANDLED.labels(service, method, code.name).inc()
                LATENCY.labels(service, method).observe(time.perf_counter() - start)

            if streaming_response:
                def stream(request, context):
                    STARTED.labels(service, method).inc()
                    start, failed = time.perf_counter(), True
                    try:
                        yield from behavior(request, context)
                        failed = False
                    finally:
                        record(context, start, failed)
                return stream

            def unary(request, context):
                STARTED.labels(service, method).inc()
                start, failed = time.perf_counter(), True
                try:
                    response = behavior(request, context)
                    failed = False
                    return response
                finally:
                    record(context, start, failed)
            return unary

        return _wrap(handler, around)


class _Undecodable:
    """Stands for request bytes that do not parse, so the call ends INVALID_ARGUMENT, not INTERNAL."""

    def __init__(self, type_name: str, error: Exception) -> None:
        self.type_name, self.error = type_name, error


def _tolerant(deserializer, type_name: str):
    def deserialize(data: bytes):
        try:
            return deserializer(data)
        except DecodeError as exc:
            return _Undecodable(type_name, exc)
    return deserialize


def _check_decoded(message):
    if isinstance(message, _Undecodable):
        raise InvalidArgument("request", f"bytes are not a valid {message.type_name} message")
    return message


def abort_with(context: grpc.ServicerContext, error: DomainError) -> None:
    """End the call with the error's code and an ``ErrorDetail`` naming the field."""
    detail = any_pb2.Any()
    detail.Pack(common_pb2.ErrorDetail(field=error.field, reason=error.reason, message=error.message))
    status = status_pb2.Status(code=grpc.StatusCode[error.code].value[0], message=str(error), details=[detail])
    context.abort_with_status(rpc_status.to_status(status))


class ErrorInterceptor(grpc.ServerInterceptor):
    """Domain errors become their status code; anything else INTERNAL with an id, never a trace."""

    def intercept_service(self, continuation, details):
        handler = continuation(details)
        if handler is None:
            return None
        method = details.method
        handler = handler._replace(request_deserializer=_tolerant(handler.request_deserializer,
                                                                  _input_type(method)))

        def fail(context, exc):
            if isinstance(exc, grpc.RpcError) and not context.is_active():
                # The client cancelled or went away while the servicer read its request stream (a grpcurl
                # closing its reflection stream): nothing to answer, no incident. gRPC raised this error
                # itself and ends the call quietly when it comes back.
                log.info("%s: the client went away", method)
                raise exc
            if isinstance(exc, NotImplementedError):  # declared in the proto, behaviour not built yet
                context.abort(grpc.StatusCode.UNIMPLEMENTED, f"{method} is declared but not implemented yet")
            if _aborted(context):  # context.abort() raised inside the behaviour: already mapped
                raise exc
            if isinstance(exc, DomainError):
                abort_with(context, exc)
            if isinstance(exc, BROKER_DOWN):  # Redis (broker, sessions, state) unreachable: retryable
                log.warning("%s: Redis unreachable: %s", method, exc.__class__.__name__)
                context.abort(grpc.StatusCode.UNAVAILABLE,
                              f"a dependency is unreachable (Redis: {exc.__class__.__name__}); retry")
            incident = uuid.uuid4().hex[:12]
            log.exception("unhandled error in %s (incident %s)", method, incident)
            context.abort(grpc.StatusCode.INTERNAL, f"internal error, incident {incident}")

        def around(behavior, streaming_request, streaming_response):
            def checked(request):
                if streaming_request:
                    return (_check_decoded(m) for m in request)
                return _check_decoded(request)

            if streaming_response:
                def stream(request, context):
                    try:
                        yield from behavior(checked(request), context)
                    except Exception as exc:  # noqa: BLE001 - mapped, logged with an incident id
                        fail(context, exc)
                return stream

            def unary(request, context):
                try:
                    return behavior(checked(request), context)
                except Exception as exc:  # noqa: BLE001
                    fail(context, exc)
            return unary

        return _wrap(handler, around)


# grpc calls intercept_service for every RPC: the descriptor lookups below are cached per method.
@functools.lru_cache(maxsize=1024)
def _input_type(full_method: str) -> str:
    service, name = _split(full_method)
    try:
        return descriptor_pool.Default().FindMethodByName(f"{service}.{name}").input_type.full_name
    except KeyError:
        return "request"


@functools.lru_cache(maxsize=1024)
def required_role(full_method: str) -> Role | None:
    """The role a method's proto declares with ``(annotation.v1.required_role)``; None if public."""
    service, name = _split(full_method)
    if service in PUBLIC_SERVICES:
        return None
    try:
        method = descriptor_pool.Default().FindMethodByName(f"{service}.{name}")
    except KeyError:
        raise PermissionDenied(f"method {full_method} has no access rule")
    role = method.GetOptions().Extensions[common_pb2.required_role]
    if role == common_pb2.ROLE_UNSPECIFIED:
        raise PermissionDenied(f"method {full_method} has no access rule")  # fail closed
    return Role(role)


# Where a request names an annotator. An annotator's key acts only as itself: every such field must be
# empty or the key's own id (tests/hardening/test_auth_rules.py drives each path of every RPC).
IDENTITY_FIELD = "annotator_id"


@functools.lru_cache(maxsize=1024)
def identity_paths(type_name: str) -> tuple[tuple, ...]:
    """Paths (tuples of field descriptors) from a message type to every ``annotator_id`` string field
    below it, through singular and repeated message fields (google.* types and cycles left out)."""
    found: list[tuple] = []

    def walk(descriptor, prefix: tuple, seen: frozenset) -> None:
        for field in descriptor.fields:
            if field.name == IDENTITY_FIELD and field.type == field.TYPE_STRING and not field.is_repeated:
                found.append((*prefix, field))
            elif field.type == field.TYPE_MESSAGE and field.message_type.full_name not in seen \
                    and not field.message_type.full_name.startswith("google."):
                walk(field.message_type, (*prefix, field), seen | {field.message_type.full_name})

    descriptor = descriptor_pool.Default().FindMessageTypeByName(type_name)
    walk(descriptor, (), frozenset({type_name}))
    return tuple(found)


def _identity_values(message, path: tuple, at: str):
    """(field path with indices, value) of every ``annotator_id`` the request sets along ``path``."""
    field, rest = path[0], path[1:]
    if not rest:
        yield f"{at}{field.name}", getattr(message, field.name)
        return
    if field.is_repeated:
        for i, item in enumerate(getattr(message, field.name)):
            yield from _identity_values(item, rest, f"{at}{field.name}[{i}].")
    elif message.HasField(field.name):
        yield from _identity_values(getattr(message, field.name), rest, f"{at}{field.name}.")


def check_identity(principal, message) -> None:
    """An annotator's key may name no other annotator than itself in a request (StartSession by A with
    annotator_id B stored B: found by the hostile tester). Reviewers, admins and services may act for one."""
    if principal.owner_scope is None:
        return
    for path in identity_paths(message.DESCRIPTOR.full_name):
        for name, value in _identity_values(message, path, ""):
            if value and value != principal.key_id:
                raise PermissionDenied(f"an annotator's key acts only as itself: {name} must be empty or "
                                       f"{principal.key_id!r} (the key's id)", field=name)


def _bearer(metadata) -> str:
    for key, value in metadata or ():
        if key == "authorization":
            scheme, _, token = value.partition(" ")
            if scheme.lower() == "bearer" and token.strip():
                return token.strip()
            raise Unauthenticated("authorization metadata must be 'Bearer <API key>'")
    raise Unauthenticated("missing authorization metadata ('Bearer <API key>')")


class AuthInterceptor(grpc.ServerInterceptor):
    """API key from ``authorization: Bearer``, role from the proto option, project from ``project_id``.

    Raises domain errors; ErrorInterceptor (outside this one) turns them into status codes.
    """

    def __init__(self, keys: KeyStore, default_deadline_s: float) -> None:
        self._keys = keys
        self._default_deadline_s = default_deadline_s

    def intercept_service(self, continuation, details):
        handler = continuation(details)
        if handler is None:
            return None
        method, metadata = details.method, details.invocation_metadata

        def authorize(context):
            remaining = context.time_remaining()
            deadline = time.monotonic() + (remaining if remaining is not None else self._default_deadline_s)
            role = required_role(method)
            principal = None if role is None else self._keys.verify(_bearer(metadata))
            if principal is not None:
                principal.authorize_call(method, role)
            set_deadline(deadline)
            set_principal(principal)
            return principal

        def scoped(principal, message):
            if principal is None or isinstance(message, _Undecodable):
                return message
            check_identity(principal, message)
            if "project_id" not in message.DESCRIPTOR.fields_by_name:
                return message
            if "\x00" in message.project_id:  # every store is keyed by it; PostgreSQL cannot hold NUL
                raise InvalidArgument("project_id", "must not contain NUL characters")
            if message.project_id:
                principal.authorize_project(message.project_id)
            elif ALL_PROJECTS not in principal.projects:
                # Only an unrestricted key may leave it empty; the service decides if empty is valid.
                raise InvalidArgument("project_id", "must name a project: this key is scoped to projects")
            return message

        def around(behavior, streaming_request, streaming_response):
            def prepare(request, context):
                principal = authorize(context)
                if streaming_request:
                    return (scoped(principal, m) for m in request)
                return scoped(principal, request)

            if streaming_response:
                def stream(request, context):
                    yield from behavior(prepare(request, context), context)
                return stream

            def unary(request, context):
                return behavior(prepare(request, context), context)
            return unary

        return _wrap(handler, around)
