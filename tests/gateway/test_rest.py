"""The gateway's REST API without the services behind it: projects, uploads and their limits,
scoping, rate limits, the fallback question, 503s that name the missing service, COCO export."""

from __future__ import annotations

import io
from datetime import UTC, datetime

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image
from pycocotools import mask as mask_utils
from skimage import data as samples

from services.common.keys import KeyStore, Role
from services.common.storage import make_engine, make_session_factory, migrate
from services.gateway.app import create_app
from services.gateway.config import GatewaySettings
from services.gateway.tables import Annotation
from services.gateway.work import WorkStore

pytestmark = pytest.mark.integration


def encode(array: np.ndarray, fmt: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format=fmt)
    return buffer.getvalue()


@pytest.fixture
def gateway():
    return GatewaySettings(_env_file=None, rate_per_s=1000, rate_burst=1000, max_upload_bytes=2_000_000,
                           max_image_pixels=600 * 600, fallback_timeout_s=0.5, grpc_timeout_s=2)


@pytest.fixture
def project(client, keys):
    for pid in ("p1", "p2"):
        reply = client.post("/v1/projects", json={"project_id": pid, "labels": ["cup", "cat"]}, headers=keys["admin"])
        assert reply.status_code == 201, reply.text
        assert reply.json()["selection"].startswith("UNAVAILABLE")  # no selection service here: said, not fatal
    files = [("files", ("coffee.png", encode(samples.coffee()[::2, ::2]), "image/png")),
             ("files", ("cat.jpg", encode(samples.chelsea(), "JPEG"), "image/jpeg"))]
    reply = client.post("/v1/projects/p1/images", files=files, headers=keys["admin"])
    assert reply.status_code == 201, reply.text
    return reply.json()["images"]


def test_projects_are_scoped_and_created_by_admins(client, keys, project):
    assert [p["project_id"] for p in client.get("/v1/projects", headers=keys["annotator"]).json()] == ["p1"]
    assert [p["project_id"] for p in client.get("/v1/projects", headers=keys["admin"]).json()] == ["p1", "p2"]
    assert client.get("/v1/projects/p1", headers=keys["other"]).status_code == 403
    assert client.get("/v1/projects/p1/images", headers=keys["other"]).status_code == 403
    assert client.post("/v1/projects", json={"project_id": "p3"}, headers=keys["reviewer"]).status_code == 403
    again = client.post("/v1/projects", json={"project_id": "p1"}, headers=keys["admin"])
    assert again.status_code == 409 and again.json()["error"]["field"] == "project_id"
    bad = client.post("/v1/projects", json={"project_id": "../etc"}, headers=keys["admin"])
    assert bad.status_code == 422 and bad.json()["error"]["field"] == "project_id"
    assert client.get("/v1/projects/nope", headers=keys["admin"]).status_code == 404
    body = client.get("/v1/projects/p1", headers=keys["annotator"]).json()
    assert body["images"] == 2 and body["labels"] == ["cup", "cat"]


def test_upload_stores_under_generated_names_and_checks_limits(client, keys, project, settings):
    coffee = project[0]
    assert coffee["width"] == 300 and coffee["height"] == 200 and coffee["filename"] == "coffee.png"
    stored = list((settings.var_dir / "images").iterdir())
    assert len(stored) == 2 and all(p.name not in ("coffee.png", "cat.jpg") for p in stored)
    content = client.get(coffee["url"], headers=keys["annotator"])
    assert content.status_code == 200 and content.headers["content-type"] == "image/png"
    assert Image.open(io.BytesIO(content.content)).size == (300, 200)
    # the same bytes again: the stored image, no second file
    again = client.post("/v1/projects/p1/images", headers=keys["admin"],
                        files=[("files", ("x/../../evil.png", encode(samples.coffee()[::2, ::2]), "image/png"))])
    assert again.json()["images"][0]["duplicate"] is True and len(list((settings.var_dir / "images").iterdir())) == 2

    def refused(payload: bytes, name: str = "f.png"):
        reply = client.post("/v1/projects/p1/images", files=[("files", (name, payload, "image/png"))],
                            headers=keys["admin"])
        return reply.status_code, reply.json()["error"]

    status, error = refused(b"not an image at all")
    assert status == 422 and error["field"] == "files[0]" and "decodable" in error["message"]
    status, error = refused(encode(np.zeros((700, 700, 3), np.uint8)))  # 490000 px > 360000, from the header
    assert status == 422 and "pixels" in error["message"]
    status, error = refused(encode(np.zeros((10, 10, 3), np.uint8))[:40])
    assert status == 422 and error["field"] == "files[0]"
    status, error = refused(np.random.default_rng(0).bytes(2_100_000))
    assert status == 413 and error["code"] == "RESOURCE_EXHAUSTED"
    assert client.post("/v1/projects/p1/images", headers=keys["annotator"],
                       files=[("files", ("a.png", encode(samples.coffee()), "image/png"))]).status_code == 403


def test_json_bodies_have_a_size_limit(client, keys, project):
    reply = client.post("/v1/projects", content=b"{" + b" " * 2_000_000 + b"}", headers={
        **keys["admin"], "Content-Type": "application/json"})
    assert reply.status_code == 413


def test_next_question_falls_back_without_the_dialog_policy(client, keys, project):
    first = client.post("/v1/projects/p1/questions/next", headers=keys["annotator"]).json()
    assert not first["exhausted"] and first["task"]["question_type"] == "SEGMENT"
    assert "no question from the dialog policy" in first["task"]["reason"] and first["task"]["policy"] == "fallback"
    assert first["image"]["image_id"] == project[0]["image_id"]
    # asking again hands back the same open task; another annotator gets the other image
    assert client.post("/v1/projects/p1/questions/next", headers=keys["annotator"]).json()["task"]["task_id"] == \
        first["task"]["task_id"]
    second = client.post("/v1/projects/p1/questions/next", headers=keys["reviewer"]).json()
    assert second["image"]["image_id"] == project[1]["image_id"]
    tasks = client.get("/v1/projects/p1/tasks", headers=keys["annotator"]).json()["tasks"]
    assert [t["task_id"] for t in tasks] == [first["task"]["task_id"]]
    assert len(client.get("/v1/projects/p1/tasks", headers=keys["reviewer"]).json()["tasks"]) == 2


def test_a_session_needs_the_segmentation_service(client, keys, project):
    task = client.post("/v1/projects/p1/questions/next", headers=keys["annotator"]).json()["task"]
    reply = client.post("/v1/projects/p1/sessions", json={"task_id": task["task_id"]}, headers=keys["annotator"])
    assert reply.status_code == 503 and "segmentation" in reply.json()["error"]["message"]
    reply = client.post("/v1/projects/p1/sessions", json={}, headers=keys["annotator"])
    assert reply.status_code == 422 and reply.json()["error"]["field"] == "task_id"
    reply = client.post("/v1/projects/p1/sessions/abc/clicks", json={"x": "left", "y": 1}, headers=keys["annotator"])
    assert reply.status_code == 422 and reply.json()["error"]["field"] == "x"


def test_review_queue_is_503_without_the_quality_service(client, keys, project):
    assert client.get("/v1/projects/p1/review", headers=keys["annotator"]).status_code == 403
    reply = client.get("/v1/projects/p1/review", headers=keys["reviewer"])
    assert reply.status_code == 503
    assert "quality service" in reply.json()["error"]["message"]


def test_coco_export_of_stored_masks(client, keys, project, settings):
    mask = np.zeros((200, 300), np.uint8, order="F")
    mask[50:100, 60:160] = 1
    rle = mask_utils.encode(mask)
    WorkStore(make_session_factory(make_engine(settings.resolved_database_url))).record(Annotation(
        session_id="s1", project_id="p1", image_id=project[0]["image_id"], task_id="t1", annotator_id="k",
        outcome="SUBMITTED", label="cup", mask_height=200, mask_width=300, mask_counts=rle["counts"].decode(),
        area_px=5000, click_count=2, seconds=3.0, quality_operation_id="", byproducts_operation_id="",
        created_at=datetime.now(UTC)))
    assert client.get("/v1/projects/p1/exports/coco", headers=keys["annotator"]).status_code == 403
    coco = client.get("/v1/projects/p1/exports/coco", headers=keys["reviewer"]).json()
    assert len(coco["images"]) == 2 and [c["name"] for c in coco["categories"]] == ["cup", "cat"]
    (ann,) = coco["annotations"]
    assert ann["area"] == 5000 and ann["bbox"] == [60.0, 50.0, 100.0, 50.0] and ann["category_id"] == 1
    decoded = mask_utils.decode({"size": ann["segmentation"]["size"], "counts": ann["segmentation"]["counts"].encode()})
    assert (decoded == mask).all()


def test_rate_limit_per_key(settings):
    migrate(settings.resolved_database_url)
    store = KeyStore(make_session_factory(make_engine(settings.resolved_database_url)), 0)
    one, two = (store.create(n, Role.ANNOTATOR, ["p1"])[1] for n in ("one", "two"))
    client = TestClient(create_app(settings, GatewaySettings(_env_file=None, rate_per_s=1, rate_burst=3)))
    codes = [client.get("/v1/whoami", headers={"Authorization": f"Bearer {one}"}).status_code for _ in range(5)]
    assert codes[:3] == [200, 200, 200] and codes[3:] == [429, 429]
    limited = client.get("/v1/whoami", headers={"Authorization": f"Bearer {one}"})
    assert limited.headers["Retry-After"] == "1" and limited.json()["error"]["code"] == "RESOURCE_EXHAUSTED"
    assert client.get("/v1/whoami", headers={"Authorization": f"Bearer {two}"}).status_code == 200


def test_pages_and_openapi_are_served(client):
    assert "canvas" in client.get("/").text and "Review queue" in client.get("/review").text
    assert "Import COCO JSON" in client.get("/project").text
    assert client.get("/static/annotator.js").status_code == 200
    assert client.get("/v1/config").json()["byproducts_ingest"] == "/v1/byproducts/events"
    paths = client.get("/openapi.json").json()["paths"]
    for path in ("/v1/projects", "/v1/projects/{project_id}/images", "/v1/projects/{project_id}/questions/next",
                 "/v1/projects/{project_id}/sessions/{session_id}/clicks", "/v1/projects/{project_id}/review",
                 "/v1/projects/{project_id}/exports/coco"):
        assert path in paths
