"""Service-to-service calls use the calling service's own key, with least privilege (issue 19, item 4).

Through the real gateway and real selection and dialog server processes: an annotator's
``questions/next`` gets the dialog's question on selection's pick of a fresh project (no task model yet:
selection's default is a uniform draw, not FAILED_PRECONDITION), although the annotator's key may not
call Selection.SelectBatch; and the dialog's service key can call nothing but its grants.
"""

from __future__ import annotations

import io

import grpc
import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image
from sqlalchemy import select

from annotation.v1 import dialog_pb2, dialog_pb2_grpc, selection_pb2, selection_pb2_grpc
from services.common.keys import SERVICE_GRANTS, ApiKey, KeyStore, Role
from services.common.service_identity import key_file
from services.common.storage import make_engine, make_session_factory, migrate
from services.gateway.app import create_app
from services.gateway.config import GatewaySettings
from services.selection.tables import BatchRow
from tests.conftest import start_service

pytestmark = pytest.mark.integration
P = "p1"


def png(seed: int) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(seed).integers(0, 255, (48, 64, 3), np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def platform(settings, spawn):
    migrate(settings.resolved_database_url)
    sessions = make_session_factory(make_engine(settings.resolved_database_url))
    store = KeyStore(sessions, 0)
    keys = {"admin": store.create("admin", Role.ADMIN, ["*"])[1],
            "annotator": store.create("annotator", Role.ANNOTATOR, [P])[1],
            "other": store.create("other annotator", Role.ANNOTATOR, [P])[1]}
    start_service(spawn, "selection", settings)
    start_service(spawn, "dialog", settings)
    gateway = GatewaySettings(_env_file=None, fallback_timeout_s=15, rate_per_s=1000, rate_burst=1000)
    with TestClient(create_app(settings, gateway)) as client:
        yield {"client": client, "keys": keys, "settings": settings, "sessions": sessions}


def test_an_annotators_next_question_is_the_dialogs_question_on_selections_pick(platform):
    client, keys = platform["client"], platform["keys"]
    created = client.post("/v1/projects", json={"project_id": P, "labels": ["cup", "cat"]},
                          headers=bearer(keys["admin"]))
    assert created.status_code == 201 and created.json()["selection"] == "ok", created.text
    files = [("files", (f"im{n}.png", png(n), "image/png")) for n in range(3)]
    uploaded = client.post(f"/v1/projects/{P}/images", files=files, headers=bearer(keys["admin"])).json()
    assert uploaded["selection"] == "ok"
    images = {image["image_id"] for image in uploaded["images"]}

    asked = []
    for who in ("annotator", "other"):
        reply = client.post(f"/v1/projects/{P}/questions/next", headers=bearer(keys[who]))
        assert reply.status_code == 200, reply.text
        task = reply.json()["task"]
        # the dialog's question (its id and policy), not the gateway's fallback
        assert task["question_id"] and task["policy"] == "greedy", task
        assert "no question from the dialog policy" not in task["reason"], task["reason"]
        assert task["image_id"] in images
        asked.append(task["image_id"])
    assert asked[0] != asked[1]  # one question per candidate: the second annotator gets another image

    with platform["sessions"]() as db:
        batches = db.scalars(select(BatchRow).where(BatchRow.project_id == P)).all()
    assert batches, "the dialog did not ask selection"
    assert {b.strategy for b in batches} == {"uniform"} and all(b.request["unscored"] for b in batches)
    assert all(b.request["asked"] == "" for b in batches)  # the gateway's default: selection's default
    picked = {region["item_id"] for b in batches for region in b.regions}
    assert set(asked) <= picked


def test_the_annotators_key_cannot_select_and_the_dialogs_key_only_selects(platform):
    client, keys, settings = platform["client"], platform["keys"], platform["settings"]
    assert client.post("/v1/projects", json={"project_id": P, "labels": ["cup", "cat"]},
                       headers=bearer(keys["admin"])).status_code == 201
    client.post(f"/v1/projects/{P}/images", files=[("files", ("a.png", png(7), "image/png"))],
                headers=bearer(keys["admin"]))
    token = key_file(settings, "dialog").read_text().strip()
    key_id = token.removeprefix("ak_").partition(".")[0]
    with platform["sessions"]() as db:
        row = db.get(ApiKey, key_id)
        assert row.role == Role.SERVICE and row.name == "service:dialog" and row.projects == ["*"]
        assert token.partition(".")[2] not in (row.secret_sha256, row.name)  # stored hashed

    service = [("authorization", f"Bearer {token}")]
    annotator = [("authorization", f"Bearer {keys['annotator']}")]
    select_batch = selection_pb2.SelectBatchRequest(project_id=P, pool_id="default", budget=5, up_to_budget=True)
    with grpc.insecure_channel(settings.service_address("selection")) as channel:
        selection = selection_pb2_grpc.SelectionStub(channel)
        with pytest.raises(grpc.RpcError) as refused:
            selection.SelectBatch(select_batch, metadata=annotator, timeout=10)
        assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
        reply = selection.SelectBatch(select_batch, metadata=service, timeout=10)
        assert len(reply.regions) == 1 and reply.regions[0].reason.startswith("uniform random draw")
        for call, request in ((selection.CreatePool, selection_pb2.CreatePoolRequest(
                project_id=P, pool_id="x", class_names=["a", "b"])),
                (selection.ReportLabels, selection_pb2.ReportLabelsRequest(project_id=P, pool_id="default")),
                (selection.GetPool, selection_pb2.GetPoolRequest(project_id=P, pool_id="default")),
                (selection.ListStrategies, selection_pb2.ListStrategiesRequest())):
            with pytest.raises(grpc.RpcError) as refused:
                call(request, metadata=service, timeout=10)
            assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED, call
            assert "not granted" in refused.value.details()
    with grpc.insecure_channel(settings.service_address("dialog")) as channel:
        with pytest.raises(grpc.RpcError) as refused:
            dialog_pb2_grpc.DialogStub(channel).ListPolicies(dialog_pb2.ListPoliciesRequest(), metadata=service,
                                                             timeout=10)
        assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
    for path in ("/v1/whoami", f"/v1/projects/{P}", "/v1/projects"):
        reply = client.get(path, headers=bearer(token))
        assert reply.status_code == 403 and reply.json()["error"]["code"] == "PERMISSION_DENIED", (path, reply.text)
    assert SERVICE_GRANTS["dialog"] == frozenset({"/annotation.v1.Selection/SelectBatch",
                                                  "/annotation.v1.Segmentation/Predict"})
