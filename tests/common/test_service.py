"""A real service process, its real Celery worker and a real Redis: the kit as clients meet it."""

from __future__ import annotations

import signal

import grpc
import httpx
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_status import rpc_status
from redis import Redis

from annotation.v1 import (
    common_pb2,
    operations_pb2,
    operations_pb2_grpc,
    selection_pb2,
    selection_pb2_grpc,
)
from services.common.keys import KeyStore, Role
from services.common.storage import make_engine, make_session_factory, migrate

pytestmark = pytest.mark.integration

SERVICE = "selection"


@pytest.fixture
def keys(settings):
    migrate(settings.resolved_database_url)
    store = KeyStore(make_session_factory(make_engine(settings.resolved_database_url)), 0)
    return {
        "admin": store.create("admin", Role.ADMIN, ["*"])[1],
        "annotator_p1": store.create("annotator", Role.ANNOTATOR, ["p1"])[1],
        "reviewer_p1": store.create("reviewer", Role.REVIEWER, ["p1"])[1],
        "store": store,
    }


@pytest.fixture
def server(settings, keys, spawn):
    from tests.conftest import start_service  # noqa: PLC0415

    return start_service(spawn, SERVICE, settings)


@pytest.fixture
def worker(settings, spawn):
    from tests.conftest import PYTHON  # noqa: PLC0415

    return spawn([PYTHON, "-m", "celery", "-A", f"services.{SERVICE}.worker:app", "worker", "-Q", SERVICE,
                  "-n", f"{SERVICE}-test@%h", "--concurrency", "1", "--without-gossip", "--without-mingle"],
                 settings)


@pytest.fixture
def channel(settings, server):
    with grpc.insecure_channel(settings.service_address(SERVICE)) as channel:
        yield channel


def bearer(token: str) -> list[tuple[str, str]]:
    return [("authorization", f"Bearer {token}")]


def test_probe_runs_a_celery_task_in_the_worker_process(channel, keys, server, worker):
    stub = operations_pb2_grpc.OperationsStub(channel)
    reply = stub.ProbeQueue(operations_pb2.ProbeQueueRequest(timeout_ms=20000), timeout=30,
                            metadata=bearer(keys["admin"]))
    assert reply.queue == SERVICE
    assert reply.worker_pid not in (0, server.proc.pid)  # answered by another process
    assert reply.task_id and reply.round_trip_ms > 0


def test_probe_without_a_worker_is_unavailable_within_its_timeout(channel, keys):
    stub = operations_pb2_grpc.OperationsStub(channel)
    with pytest.raises(grpc.RpcError) as err:
        stub.ProbeQueue(operations_pb2.ProbeQueueRequest(timeout_ms=500), timeout=30,
                        metadata=bearer(keys["admin"]))
    # The server's own answer (not the client's deadline), after the request's wait, not the default 5 s.
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE, err.value.details()
    assert err.value.details() == "no worker consumed queue 'selection' within 500 ms"


def test_probe_with_the_broker_down_is_unavailable_within_its_deadline(channel, keys, redis_server):
    stub = operations_pb2_grpc.OperationsStub(channel)
    keys["admin"]  # the key is stored before Redis goes away
    redis_server.proc.kill()
    redis_server.proc.wait()
    try:
        with pytest.raises(grpc.RpcError) as err:
            stub.ProbeQueue(operations_pb2.ProbeQueueRequest(timeout_ms=500), timeout=30,
                            metadata=bearer(keys["admin"]))
        with pytest.raises(grpc.RpcError) as lookup:  # any call that reads Redis: retryable, not INTERNAL
            stub.GetOperation(operations_pb2.GetOperationRequest(project_id="p1", operation_id="op-1"),
                              timeout=30, metadata=bearer(keys["admin"]))
    finally:
        redis_server.start()
    # Answered by the server (UNAVAILABLE, naming the broker), not cut off by the client's deadline
    # (DEADLINE_EXCEEDED) nor turned into INTERNAL.
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE, err.value.details()
    assert "unreachable" in err.value.details()
    assert lookup.value.code() == grpc.StatusCode.UNAVAILABLE, lookup.value.details()
    assert "Redis" in lookup.value.details()


@pytest.mark.parametrize("metadata", [None, [("authorization", "Bearer ak_0000.wrong")],
                                      [("authorization", "Basic dXNlcjpwYXNz")], [("authorization", "Bearer")]])
def test_missing_or_wrong_key_is_unauthenticated(channel, metadata):
    stub = operations_pb2_grpc.OperationsStub(channel)
    with pytest.raises(grpc.RpcError) as err:
        stub.GetOperation(operations_pb2.GetOperationRequest(project_id="p1", operation_id="x"),
                          metadata=metadata, timeout=5)
    assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED


def test_revoked_key_is_unauthenticated(channel, keys):
    principal, token = keys["store"].create("temp", Role.ADMIN, ["*"])
    stub = operations_pb2_grpc.OperationsStub(channel)
    request = operations_pb2.GetOperationRequest(project_id="p1", operation_id="missing")
    with pytest.raises(grpc.RpcError) as err:
        stub.GetOperation(request, metadata=bearer(token), timeout=5)
    assert err.value.code() == grpc.StatusCode.NOT_FOUND  # the key worked
    keys["store"].revoke(principal.key_id)  # the test settings cache keys for 0 s
    with pytest.raises(grpc.RpcError) as err:
        stub.GetOperation(request, metadata=bearer(token), timeout=5)
    assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED


def test_role_too_low_is_permission_denied(channel, keys):
    stub = operations_pb2_grpc.OperationsStub(channel)
    with pytest.raises(grpc.RpcError) as err:  # ProbeQueue needs admin
        stub.ProbeQueue(operations_pb2.ProbeQueueRequest(), metadata=bearer(keys["reviewer_p1"]), timeout=5)
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "needs admin" in err.value.details()


def test_other_project_is_permission_denied(channel, keys):
    stub = operations_pb2_grpc.OperationsStub(channel)
    with pytest.raises(grpc.RpcError) as err:
        stub.GetOperation(operations_pb2.GetOperationRequest(project_id="p2", operation_id="x"),
                          metadata=bearer(keys["annotator_p1"]), timeout=5)
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
    # Same key, its own project: passes auth and reaches the handler (which finds nothing).
    with pytest.raises(grpc.RpcError) as err:
        stub.GetOperation(operations_pb2.GetOperationRequest(project_id="p1", operation_id="x"),
                          metadata=bearer(keys["annotator_p1"]), timeout=5)
    assert err.value.code() == grpc.StatusCode.NOT_FOUND


def test_empty_project_from_a_scoped_key_is_invalid(channel, keys):
    stub = operations_pb2_grpc.OperationsStub(channel)
    with pytest.raises(grpc.RpcError) as err:
        stub.GetOperation(operations_pb2.GetOperationRequest(operation_id="x"),
                          metadata=bearer(keys["annotator_p1"]), timeout=5)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert err.value.details().startswith("project_id:")


def test_malformed_request_names_the_field(channel, keys):
    stub = operations_pb2_grpc.OperationsStub(channel)
    with pytest.raises(grpc.RpcError) as err:
        stub.GetOperation(operations_pb2.GetOperationRequest(project_id="p1"), metadata=bearer(keys["admin"]),
                          timeout=5)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    status = rpc_status.from_call(err.value)
    detail = common_pb2.ErrorDetail()
    assert status.details[0].Unpack(detail)
    assert detail.field == "operation_id"


def test_undecodable_bytes_are_invalid_argument_not_internal(channel, keys):
    call = channel.unary_unary("/annotation.v1.Operations/GetOperation")
    with pytest.raises(grpc.RpcError) as err:
        call(b"\xff\xff\xff\xff", metadata=bearer(keys["admin"]), timeout=5)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "annotation.v1.GetOperationRequest" in err.value.details()


def test_unscoped_rpc_needs_a_key_and_then_any_role_passes(channel, keys):
    stub = selection_pb2_grpc.SelectionStub(channel)
    with pytest.raises(grpc.RpcError) as err:
        stub.ListStrategies(selection_pb2.ListStrategiesRequest(), timeout=5)
    assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
    reply = stub.ListStrategies(selection_pb2.ListStrategiesRequest(), metadata=bearer(keys["annotator_p1"]),
                                timeout=5)
    assert reply.strategies


def test_health_and_reflection_need_no_key(channel):
    health = health_pb2_grpc.HealthStub(channel)
    reply = health.Check(health_pb2.HealthCheckRequest(service="annotation.v1.Selection"), timeout=5)
    assert reply.status == health_pb2.HealthCheckResponse.SERVING
    from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc  # noqa: PLC0415

    stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    replies = stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]),
                                        timeout=5)
    names = {s.name for r in replies for s in r.list_services_response.service}
    assert {"annotation.v1.Selection", "annotation.v1.Operations", "grpc.health.v1.Health"} <= names


def test_metrics_count_calls_by_code(channel, keys, settings):
    stub = operations_pb2_grpc.OperationsStub(channel)
    for _ in range(3):
        with pytest.raises(grpc.RpcError):
            stub.GetOperation(operations_pb2.GetOperationRequest(project_id="p1"), timeout=5)
    body = httpx.get(f"http://127.0.0.1:{settings.metrics_port(SERVICE)}/metrics", timeout=5).text
    line = ('grpc_server_handled_total{grpc_code="UNAUTHENTICATED",grpc_method="GetOperation",'
            'grpc_service="annotation.v1.Operations"} 3.0')
    assert line in body
    assert "grpc_server_handling_seconds_bucket" in body


def test_redis_down_turns_health_not_serving_then_back(channel, redis_server, settings):
    from tests.conftest import wait_until  # noqa: PLC0415

    health = health_pb2_grpc.HealthStub(channel)

    def status():
        return health.Check(health_pb2.HealthCheckRequest(), timeout=2).status

    assert status() == health_pb2.HealthCheckResponse.SERVING
    redis_server.stop()
    # The health loop pings Redis every 0.3 s (ping timeout 0.5 s); the deadline only bounds a hang.
    wait_until(lambda: status() == health_pb2.HealthCheckResponse.NOT_SERVING, 30, "NOT_SERVING")
    # Liveness stays SERVING: an outage of a dependency must not get the pod restarted.
    alive = health.Check(health_pb2.HealthCheckRequest(service="liveness"), timeout=2).status
    assert alive == health_pb2.HealthCheckResponse.SERVING
    redis_server.start()
    wait_until(lambda: status() == health_pb2.HealthCheckResponse.SERVING, 10, "SERVING again")


def test_sigterm_lets_an_inflight_call_finish_and_exits_cleanly(settings, keys, spawn):
    """The call is provably inside the handler when SIGTERM arrives, and cannot finish before the worker
    starts: the probe's task waits on the queue, and the worker is started only after the signal."""
    from tests.conftest import PYTHON, start_service, wait_until  # noqa: PLC0415

    settings = settings.model_copy(update={"grpc_grace_s": 120.0})  # long enough for a worker to boot
    server = start_service(spawn, SERVICE, settings)
    broker = Redis.from_url(settings.redis_url)
    with grpc.insecure_channel(settings.service_address(SERVICE)) as channel:
        stub = operations_pb2_grpc.OperationsStub(channel)
        future = stub.ProbeQueue.future(operations_pb2.ProbeQueueRequest(timeout_ms=110_000), timeout=120,
                                        metadata=bearer(keys["admin"]))
        wait_until(lambda: broker.llen(SERVICE) == 1 or future.done(), 30, "the probe's task on the queue")
        assert not future.done(), future.exception()  # the handler is waiting for a worker
        server.proc.send_signal(signal.SIGTERM)
        spawn([PYTHON, "-m", "celery", "-A", f"services.{SERVICE}.worker:app", "worker", "-Q", SERVICE,
               "-n", f"{SERVICE}-test@%h", "--concurrency", "1", "--without-gossip", "--without-mingle"], settings)
        reply = future.result()
    assert reply.queue == SERVICE and reply.worker_pid not in (0, server.proc.pid)
    assert server.proc.wait(60) == 0


def test_the_server_stops_waiting_at_the_callers_deadline(channel, keys, settings):
    """No worker runs, the probe would wait 10 minutes; the client's 1 s deadline must end the handler too."""
    from tests.conftest import wait_until  # noqa: PLC0415

    stub = operations_pb2_grpc.OperationsStub(channel)
    with pytest.raises(grpc.RpcError) as err:
        stub.ProbeQueue(operations_pb2.ProbeQueueRequest(timeout_ms=600_000), timeout=1.0,
                        metadata=bearer(keys["admin"]))
    assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    metrics = f"http://127.0.0.1:{settings.metrics_port(SERVICE)}/metrics"
    finished = 'grpc_server_handled_total{grpc_code="UNAVAILABLE",grpc_method="ProbeQueue"'

    # The handler itself ends (UNAVAILABLE: no worker within the time left): a handler that ignored the
    # deadline would still be waiting long after this poll's 60 s have run out.
    wait_until(lambda: finished in httpx.get(metrics, timeout=5).text, 60, "handler finished")
