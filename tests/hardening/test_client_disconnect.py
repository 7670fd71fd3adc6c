"""A client that goes away mid-stream is no incident (issue 19, item 5).

The selection server logged an unhandled ``grpc.RpcError`` from server reflection each time a client
(grpcurl) closed its ``ServerReflectionInfo`` stream: the servicer was waiting for the next request
when the client cancelled, gRPC raised the cancellation out of the request iterator, and the kit's
error interceptor took it for a failure of the service (ERROR log with an incident id, INTERNAL in the
metrics). The kit now lets it end quietly as CANCELLED, for every service and every client-streaming RPC.

When the cancellation reaches a waiting request iterator, gRPC either raises it (the case above) or ends
the stream early (the servicer then finishes normally); which one is a race inside gRPC, so each case
is tried a few times, and none may log an error or count as INTERNAL.
"""

from __future__ import annotations

import logging
import threading
import time

import grpc
import pytest
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from annotation.v1 import byproducts_pb2, byproducts_pb2_grpc
from services.common.interceptors import HANDLED

pytestmark = pytest.mark.integration


def _handled(method: str) -> dict[str, float]:
    counts: dict[str, float] = {}
    for metric in HANDLED.collect():
        for sample in metric.samples:
            if sample.name.endswith("_total") and sample.labels["grpc_method"] == method:
                counts[sample.labels["grpc_code"]] = counts.get(sample.labels["grpc_code"], 0) + sample.value
    return counts


@pytest.fixture
def errors():
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    handler = Keep(logging.WARNING)
    logger = logging.getLogger("services")
    logger.addHandler(handler)
    yield records
    logger.removeHandler(handler)


def _cancel_while_the_server_waits(start_call, first_request, read_first: bool, method: str):
    """Open a client stream, send one request, let the server block on the next one, cancel."""
    before = _handled(method)
    hold = threading.Event()

    def requests():
        yield first_request
        hold.wait(10)  # the client neither sends more nor half-closes: the server waits for a request

    call = start_call(requests())
    if read_first:
        next(call)
    time.sleep(0.5)  # the servicer is back in its request iterator
    call.cancel()
    hold.set()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and sum(_handled(method).values()) == sum(before.values()):
        time.sleep(0.05)
    after = _handled(method)
    return {code: after.get(code, 0) - before.get(code, 0) for code in after if after.get(code, 0) != before.get(code, 0)}


TRIES = 3
QUIET = {"CANCELLED", "OK", "UNIMPLEMENTED"}


def test_a_client_closing_its_reflection_stream_is_no_incident(platform, errors):
    with grpc.insecure_channel(platform.grpc_address) as channel:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        for _ in range(TRIES):
            codes = _cancel_while_the_server_waits(
                stub.ServerReflectionInfo, reflection_pb2.ServerReflectionRequest(list_services=""), True,
                "ServerReflectionInfo")
            assert sum(codes.values()) == 1 and set(codes) <= QUIET, codes
    assert not [r for r in errors if "ServerReflectionInfo" in r.getMessage()], [r.getMessage() for r in errors]


def test_a_client_cancelling_its_event_stream_is_no_incident(platform, errors):
    """The same for a client-streaming RPC of a service (Byproducts.Record: the web annotator's tab closed)."""
    event = byproducts_pb2.Event(project_id="p1", session_id="s", event_id="e", seq=1)
    with grpc.insecure_channel(platform.grpc_address) as channel:
        stub = byproducts_pb2_grpc.ByproductsStub(channel)
        auth = [("authorization", f"Bearer {platform.keys['annotator_p1']}")]
        for _ in range(TRIES):
            codes = _cancel_while_the_server_waits(lambda requests: stub.Record.future(requests, metadata=auth),
                                                   event, False, "Record")
            assert sum(codes.values()) == 1 and set(codes) <= QUIET, codes
    assert not [r for r in errors if "Record" in r.getMessage()], [r.getMessage() for r in errors]
