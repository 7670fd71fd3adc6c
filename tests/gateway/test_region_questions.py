"""Region questions reach the page through the gateway (ANNOT_GATEWAY_QUESTION_GRANULARITY=patch or superpixel),
with the real selection (server and worker) and dialog servers: before a task model has scored the pool at that
granularity, the dialog asks about whole images; once it has, about a patch (its box) or a superpixel (its box and
its pixels as a mask), as LABEL_REGION, whose labels the dialog records; a box outside the region is refused."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from annotation.v1 import common_pb2
from services.common.keys import KeyStore, Role
from services.common.masks import decode_rle
from services.common.storage import make_engine, make_session_factory
from services.gateway.config import GatewaySettings
from tests.conftest import PYTHON, start_service
from tests.region_scoring import score_pool

pytestmark = pytest.mark.integration


SUPERPIXELS = 12  # SLIC segments of a 64x48 image: about 16x16 pixels each


@pytest.fixture
def gateway(request):
    return GatewaySettings(_env_file=None, fallback_timeout_s=2.0, question_granularity=getattr(
        request, "param", "patch"), question_patch_size_px=16, question_superpixels=SUPERPIXELS)


def png(seed: int) -> bytes:
    """A dark 64x48 image with a bright disk."""
    rng = np.random.default_rng(seed)
    pixels = (rng.random((48, 64, 3)) * 40).astype(np.uint8)
    yy, xx = np.mgrid[:48, :64]
    pixels[(yy - 24) ** 2 + (xx - 32) ** 2 < 13**2] = (230, 60, 40)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def scored_project(settings, spawn, client, keys, granularity: int, **sizes) -> dict:
    """A project "p1" of two images, the dialog's first question a whole image, then the pool scored at
    ``granularity`` from a task model's predictions; the headers of a second annotator (whose first question
    comes after the scoring)."""
    start_service(spawn, "selection", settings)
    spawn([PYTHON, "-m", "celery", "-A", "services.selection.worker:app", "worker", "-Q", "selection",
           "-n", "selection-regions@%h", "--concurrency", "1", "--without-gossip", "--without-mingle"], settings)
    start_service(spawn, "dialog", settings)
    admin = keys["admin"]
    assert client.post("/v1/projects", json={"project_id": "p1", "labels": ["cup"]}, headers=admin).json()["selection"] == "ok"
    uploaded = client.post("/v1/projects/p1/images", headers=admin, files=[
        ("files", (f"im{i}.png", png(i), "image/png")) for i in range(2)]).json()
    assert uploaded["selection"] == "ok"
    store = KeyStore(make_session_factory(make_engine(settings.resolved_database_url)), 0)
    second = {"Authorization": f"Bearer {store.create('second', Role.ANNOTATOR, ['p1'])[1]}"}

    # no task model has scored the pool: whole images, from the dialog (not the fallback)
    whole = client.post("/v1/projects/p1/questions/next", headers=keys["annotator"]).json()["task"]
    assert whole["policy"] != "fallback" and whole["question_id"], whole["reason"]
    assert whole["region"] == {"kind": "whole_image"}

    # a task model's predictions, scored by region (the training wing does this in a deployment)
    score_pool(settings, admin["Authorization"], "p1", [i["image_id"] for i in uploaded["images"]], (48, 64),
               granularity, **sizes)
    return second


def test_patch_questions_once_the_pool_is_scored(settings, spawn, client, keys):
    second = scored_project(settings, spawn, client, keys, common_pb2.GRANULARITY_PATCH, patch_sizes_px=[16])
    task = client.post("/v1/projects/p1/questions/next", headers=second).json()["task"]
    assert task["policy"] != "fallback" and task["question_type"] == "LABEL_REGION", task["reason"]
    assert task["region"]["kind"] == "patch" and "region" in task["prompt"]
    x, y, w, h = task["region"]["box"]
    assert x % 16 == 0 and y % 16 == 0 and (w, h) == (16, 16)
    answered = client.post(f"/v1/projects/p1/tasks/{task['task_id']}/answer", headers=second, json={
        "labels": [{"label": "cup", "box": [x + 2, y + 2, 8, 8]}], "seconds": 2.0})
    assert answered.status_code == 200 and answered.json()["dialog"] == "recorded", answered.text


@pytest.mark.parametrize("gateway", ["superpixel"], indirect=True)
def test_superpixel_questions_once_the_pool_is_scored(settings, spawn, client, keys):
    second = scored_project(settings, spawn, client, keys, common_pb2.GRANULARITY_SUPERPIXEL,
                            superpixel_counts=[SUPERPIXELS])
    task = client.post("/v1/projects/p1/questions/next", headers=second).json()["task"]
    assert task["policy"] != "fallback" and task["question_type"] == "LABEL_REGION", task["reason"]
    region = task["region"]
    assert region["kind"] == "superpixel" and "region" in task["prompt"]
    # the page gets the superpixel's pixels, and its box is exactly theirs
    inside = decode_rle(region["mask"]["size"], region["mask"]["counts"], (48, 64), "mask")
    assert inside.shape == (48, 64) and 0 < inside.sum() < inside.size // 2
    rows, cols = np.nonzero(inside)
    x, y, w, h = region["box"]
    assert (x, y, w, h) == (cols.min(), rows.min(), cols.max() - cols.min() + 1, rows.max() - rows.min() + 1)

    # boxes are limited to the region: one reaching past it is refused, naming the box; one inside recorded
    url = f"/v1/projects/p1/tasks/{task['task_id']}/answer"
    past = [x, y, w + 1, h] if x + w < 64 else [x - 1, y, w + 1, h]  # one column beyond the region's box
    outside = client.post(url, headers=second, json={"labels": [{"label": "cup", "box": past}], "seconds": 2.0})
    assert outside.status_code == 422 and "labels[0].box" in outside.text, outside.text
    # inside the box but on none of the superpixel's own pixels (another superpixel's): refused too
    gaps = np.argwhere(~inside[int(y):int(y + h), int(x):int(x + w)])
    assert len(gaps), "the superpixel fills its bounding box: pick another test image"
    gy, gx = gaps[0]
    elsewhere = client.post(url, headers=second, json={"labels": [{"label": "cup", "box": [int(x + gx), int(y + gy),
                                                                                          1, 1]}], "seconds": 2.0})
    assert elsewhere.status_code == 422 and "superpixel" in elsewhere.text, elsewhere.text
    answered = client.post(url, headers=second, json={"labels": [{"label": "cup", "box": [x, y, w, h]}],
                                                       "seconds": 2.0})
    assert answered.status_code == 200 and answered.json()["dialog"] == "recorded", answered.text
