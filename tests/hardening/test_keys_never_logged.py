"""API keys never appear in the logs: requests with keys (valid, wrong, malformed, forwarded to a
service over gRPC, failing inside the service) with every logger at DEBUG and the JSON log format
of ``services/common/logs.py``; neither the whole key nor its secret part is in any line."""

from __future__ import annotations

import io
import json
import logging

import grpc
import pytest

from annotation.v1 import selection_pb2, selection_pb2_grpc
from services.common.logs import configure_logging
from tests.hardening.conftest import bearer

pytestmark = pytest.mark.integration


@pytest.fixture
def captured_logs(platform):
    root = logging.getLogger()
    saved_handlers, saved_level = root.handlers[:], root.level
    buffer = io.StringIO()
    configure_logging("gateway", platform.settings.model_copy(update={"log_level": "DEBUG", "log_json": True}))
    root.handlers[0].setStream(buffer)
    yield buffer
    root.handlers[:] = saved_handlers
    root.setLevel(saved_level)


def test_keys_never_appear_in_logs(client, platform, projects, captured_logs):
    keys = platform.keys
    secrets_used = [keys["admin"], keys["annotator_p1"], keys["admin_p2"]]
    client.get("/v1/whoami", headers=bearer(keys["annotator_p1"]))
    created = client.post("/v1/keys", json={"name": "minted", "role": "annotator", "projects": ["p1"]},
                          headers=bearer(keys["admin"])).json()["key"]
    secrets_used.append(created)
    wrong = keys["admin"][:-4] + "AAAA"  # a valid id with a wrong secret
    secrets_used.append(wrong)
    assert client.get("/v1/whoami", headers=bearer(wrong)).status_code == 401
    malformed = "not-a-key-but-a-secret-" + "Z" * 20
    secrets_used.append(malformed)
    assert client.get("/v1/whoami", headers=bearer(malformed)).status_code == 401
    # forwarded over gRPC: the project creation calls selection, which answers UNIMPLEMENTED (logged)
    client.post("/v1/projects", json={"project_id": "p-logs"}, headers=bearer(keys["admin"]))
    client.get("/v1/projects/p2/images", headers=bearer(keys["admin_p2"]))
    client.get("/v1/byproducts/sessions", params={"project_id": "p1"}, headers=bearer(keys["annotator_p1"]))
    client.post("/v1/projects/p1/sessions", json={"image_id": "nope"}, headers=bearer(keys["annotator_p1"]))
    # straight to gRPC, with the server's interceptors logging at DEBUG in this process
    with grpc.insecure_channel(platform.grpc_address) as channel:
        stub = selection_pb2_grpc.SelectionStub(channel)
        for key in (keys["admin"], wrong, malformed):
            with pytest.raises(grpc.RpcError):
                stub.ListStrategies(selection_pb2.ListStrategiesRequest(), timeout=10,
                                    metadata=[("authorization", f"Bearer {key}")])
    logged = captured_logs.getvalue()
    lines = [line for line in logged.splitlines() if line.strip()]
    assert len(lines) >= 3 and "CreatePool failed" in logged, logged  # the capture works
    assert all(json.loads(line)["service"] == "gateway" for line in lines)
    for secret in secrets_used:
        _, _, secret_part = secret.partition(".")
        for needle in {secret, secret_part or secret, secret[-24:]}:
            assert needle not in logged, f"key material {needle[:6]}... logged"
