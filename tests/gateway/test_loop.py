"""The loop through the gateway with the real segmentation and selection services (server and worker), real
Redis and the real tritonserver: next question -> session -> clicks (mask each time) -> undo/redo -> submit ->
the mask is stored and exported, and selection counts the image labelled; skip; errors of the service come
back as REST errors. No dialog runs here: the fallback asks, and says why."""

from __future__ import annotations

import io

import grpc
import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image
from skimage import data as samples

from annotation.v1 import selection_pb2, selection_pb2_grpc
from services.common.keys import KeyStore, Role
from services.common.masks import decode_rle
from services.common.probes import grpc_health
from services.common.storage import make_engine, make_session_factory, migrate
from services.gateway.app import create_app
from services.gateway.config import GatewaySettings
from tests.conftest import PYTHON, start_service, wait_until

pytestmark = pytest.mark.integration

CUP = (300, 180)  # a pixel on the coffee cup of skimage's coffee (600 x 400)


def png(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture
def loop_settings(settings, triton_server):
    return settings.model_copy(update={"triton_grpc_url": triton_server.grpc_url,
                                       "triton_http_port": triton_server.http_port})


@pytest.fixture
def client(loop_settings, spawn):
    migrate(loop_settings.resolved_database_url)
    process = spawn([PYTHON, "-m", "services.segmentation.server"], loop_settings)
    try:
        wait_until(lambda: grpc_health(loop_settings.service_address("segmentation"), 0.5) == "SERVING", 60,
                   "segmentation SERVING")
    except TimeoutError:
        pytest.fail(process.output())
    start_service(spawn, "selection", loop_settings)
    spawn([PYTHON, "-m", "celery", "-A", "services.selection.worker:app", "worker", "-Q", "selection",
           "-n", "selection-loop@%h", "--concurrency", "1", "--without-gossip", "--without-mingle"], loop_settings)
    gateway = GatewaySettings(_env_file=None, fallback_timeout_s=0.5)
    with TestClient(create_app(loop_settings, gateway)) as test_client:
        yield test_client


@pytest.fixture
def keys(loop_settings, client):
    store = KeyStore(make_session_factory(make_engine(loop_settings.resolved_database_url)), 0)
    admin = store.create("admin", Role.ADMIN, ["*"])[1]
    annotator = store.create("ann", Role.ANNOTATOR, ["p1"])[1]
    reviewer = store.create("rev", Role.REVIEWER, ["p1"])[1]
    return {name: {"Authorization": f"Bearer {token}"} for name, token in
            (("admin", admin), ("annotator", annotator), ("reviewer", reviewer))}


def labelled(settings, key: dict) -> int:
    """How many of the project's images selection counts labelled by humans."""
    with grpc.insecure_channel(settings.service_address("selection")) as channel:
        pool = selection_pb2_grpc.SelectionStub(channel).GetPool(
            selection_pb2.GetPoolRequest(project_id="p1", pool_id="default"),
            metadata=[("authorization", key["Authorization"])], timeout=10).pool
    return pool.labelled_count


def test_question_clicks_undo_redo_submit_export(client, keys, loop_settings):
    made = client.post("/v1/projects", json={"project_id": "p1", "labels": ["cup"]}, headers=keys["admin"])
    assert made.status_code == 201 and made.json()["selection"] == "ok", made.text
    files = [("files", ("coffee.png", png(samples.coffee()), "image/png")),
             ("files", ("cat.png", png(samples.chelsea()), "image/png"))]
    uploaded = client.post("/v1/projects/p1/images", files=files, headers=keys["admin"]).json()
    images = uploaded["images"]
    assert uploaded["selection"] == "ok" and labelled(loop_settings, keys["admin"]) == 0
    ann = keys["annotator"]
    question = client.post("/v1/projects/p1/questions/next", headers=ann).json()
    assert question["image"]["image_id"] == images[0]["image_id"]
    # no dialog here: the fallback asks, and its reason says the dialog is unavailable
    assert question["task"]["policy"] == "fallback" and "UNAVAILABLE" in question["task"]["reason"]
    started = client.post("/v1/projects/p1/sessions", json={"task_id": question["task"]["task_id"], "label": "cup"},
                          headers=ann)
    assert started.status_code == 201, started.text
    session = started.json()
    assert (session["width"], session["height"]) == (600, 400) and session["state"] == "active"
    base = f"/v1/projects/p1/sessions/{session['session_id']}"

    first = client.post(f"{base}/clicks", json={"x": CUP[0], "y": CUP[1], "positive": True, "t_ms": 800}, headers=ann)
    assert first.status_code == 200, first.text
    body = first.json()
    mask = decode_rle(body["mask"]["size"], body["mask"]["counts"], (400, 600), "mask")
    assert mask[CUP[1], CUP[0]] and 1000 < mask.sum() < 0.5 * mask.size
    assert body["click_count"] == 1 and body["model_latency_ms"] > 0 and body["stats"]["area_px"] == mask.sum()

    second = client.post(f"{base}/clicks", json={"x": 20, "y": 20, "positive": False, "t_ms": 1500}, headers=ann).json()
    assert second["click_count"] == 2 and second["click"]["index"] == 1
    undone = client.post(f"{base}/undo", headers=ann).json()
    assert undone["click_count"] == 1 and undone["mask"] == body["mask"] and undone["redo_depth"] == 1
    redone = client.post(f"{base}/redo", headers=ann).json()
    assert redone["click_count"] == 2 and redone["mask"] == second["mask"]

    outside = client.post(f"{base}/clicks", json={"x": 600, "y": 10}, headers=ann)
    assert outside.status_code == 422 and outside.json()["error"]["field"] == "click.x"
    assert client.post("/v1/projects/p1/sessions/nope/clicks", json={"x": 1, "y": 1}, headers=ann).status_code == 404

    finished = client.post(f"{base}/finish", json={"outcome": "submitted", "label": "cup"}, headers=ann)
    assert finished.status_code == 200, finished.text
    done = finished.json()
    assert done["session"]["state"] == "finished" and done["quality_operation_id"] and done["byproducts_operation_id"]
    # selection hears of the labelled image (ReportLabels, directly or through the session's event)
    wait_until(lambda: labelled(loop_settings, keys["admin"]) == 1, 30, "selection counts the image labelled")
    late = client.post(f"{base}/clicks", json={"x": 5, "y": 5}, headers=ann)
    assert late.status_code == 409 and late.json()["error"]["code"] == "FAILED_PRECONDITION"

    stored = client.get(f"/v1/projects/p1/annotations/{session['session_id']}", headers=keys["reviewer"]).json()
    assert stored["mask"] == second["mask"] and stored["click_count"] == 2 and stored["outcome"] == "submitted"
    coco = client.get("/v1/projects/p1/exports/coco", headers=keys["reviewer"]).json()
    (annotation,) = coco["annotations"]
    assert annotation["segmentation"]["counts"] == second["mask"]["counts"]
    assert client.get("/v1/projects/p1/tasks?state=submitted", headers=ann).json()["tasks"][0]["session_id"] == \
        session["session_id"]

    # the next question is the other image; skipping it leaves nothing for this annotator
    nxt = client.post("/v1/projects/p1/questions/next", headers=ann).json()
    assert nxt["image"]["image_id"] == images[1]["image_id"]
    skip_session = client.post("/v1/projects/p1/sessions", json={"task_id": nxt["task"]["task_id"]}, headers=ann).json()
    skipped = client.post(f"/v1/projects/p1/sessions/{skip_session['session_id']}/finish", json={"outcome": "skipped"},
                          headers=ann).json()
    assert skipped["session"]["outcome"] == "skipped" and not skipped["quality_operation_id"]
    assert client.post("/v1/projects/p1/questions/next", headers=ann).json()["exhausted"] is True
    assert len(client.get("/v1/projects/p1/exports/coco", headers=keys["reviewer"]).json()["annotations"]) == 1
    assert labelled(loop_settings, keys["admin"]) == 1  # a skip labels nothing

