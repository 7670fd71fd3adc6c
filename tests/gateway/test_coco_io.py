"""COCO import (RLE compressed and not, polygons, boxes) into a project, and the export of per-image PNG label
maps beside the COCO JSON: what goes in comes out pixel for pixel; unknown categories and broken segmentations
are refused naming the annotation; importing again adds nothing."""

from __future__ import annotations

import io
import json
import zipfile

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as mask_utils

from services.common.masks import decode_rle
from services.gateway.config import GatewaySettings

H, W = 40, 60


@pytest.fixture
def gateway():
    return GatewaySettings(_env_file=None, fallback_timeout_s=0.2)


def png(value: int) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.full((H, W, 3), value, np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def rle(mask: np.ndarray) -> dict:
    encoded = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [H, W], "counts": encoded["counts"].decode()}


def uncompressed(mask: np.ndarray) -> dict:
    flat = mask.astype(np.uint8).flatten(order="F")
    changes = np.flatnonzero(np.diff(np.concatenate([[0], flat, [1 - flat[-1]]]))).tolist()
    return {"size": [H, W], "counts": np.diff([0, *changes]).tolist()}


def test_import_then_export_masks(client, keys):
    admin = keys["admin"]
    assert client.post("/v1/projects", json={"project_id": "p1", "labels": ["cup", "plate"]}, headers=admin).status_code == 201
    client.post("/v1/projects/p1/images", headers=admin, files=[("files", ("a.png", png(10), "image/png")),
                                                                ("files", ("b.png", png(200), "image/png"))])
    cup_a = np.zeros((H, W), bool)
    cup_a[5:20, 10:30] = True
    cup_b = np.zeros((H, W), bool)
    cup_b[30:38, 2:9] = True
    polygon = [[40.0, 5.0, 55.0, 5.0, 55.0, 25.0, 40.0, 25.0]]
    coco = {
        "images": [{"id": 1, "file_name": "a.png", "height": H, "width": W},
                   {"id": 2, "file_name": "b.png", "height": H, "width": W},
                   {"id": 3, "file_name": "missing.png", "height": H, "width": W}],
        "categories": [{"id": 7, "name": "cup"}, {"id": 9, "name": "plate"}],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 7, "segmentation": rle(cup_a)},
            {"id": 2, "image_id": 2, "category_id": 9, "segmentation": polygon},
            {"id": 3, "image_id": 1, "category_id": 9, "bbox": [40, 30, 10, 5]},
            {"id": 4, "image_id": 2, "category_id": 7, "segmentation": uncompressed(cup_b)},
            {"id": 5, "image_id": 3, "category_id": 7, "bbox": [0, 0, 5, 5]},
            {"id": 6, "image_id": 2, "category_id": 7, "segmentation": rle(np.zeros((H, W), bool))},  # no pixel
        ],
    }
    assert client.post("/v1/projects/p1/imports/coco", json=coco, headers=keys["annotator"]).status_code == 403
    done = client.post("/v1/projects/p1/imports/coco", json=coco, headers=admin)
    assert done.status_code == 200, done.text
    assert done.json()["imported"] == 4 and done.json()["unmatched_images"] == ["missing.png"]
    # by the shape the file gave (compressed and uncompressed RLE both rle), the empty mask counted apart
    assert done.json()["kinds"] == {"rle": 2, "polygon": 1, "box": 1} and done.json()["skipped_empty"] == 1
    assert client.post("/v1/projects/p1/imports/coco", json=coco, headers=admin).json()["imported"] == 4

    exported = client.get("/v1/projects/p1/exports/coco", headers=keys["reviewer"]).json()
    assert len(exported["annotations"]) == 4  # the second import added nothing
    by_file = {i["id"]: i["file_name"] for i in exported["images"]}
    names = {c["id"]: c["name"] for c in exported["categories"]}
    masks = {(by_file[a["image_id"]], names[a["category_id"]]):
             decode_rle(a["segmentation"]["size"], a["segmentation"]["counts"], (H, W), "mask")
             for a in exported["annotations"]}
    assert (masks[("a.png", "cup")] == cup_a).all() and (masks[("b.png", "cup")] == cup_b).all()
    box = np.zeros((H, W), bool)
    box[30:35, 40:50] = True
    assert (masks[("a.png", "plate")] == box).all()
    assert masks[("b.png", "plate")][15, 47] and not masks[("b.png", "plate")][15, 30]

    archive = client.get("/v1/projects/p1/exports/masks.zip", headers=keys["reviewer"])
    assert archive.status_code == 200 and archive.headers["content-type"] == "application/zip"
    with zipfile.ZipFile(io.BytesIO(archive.content)) as z:
        files = sorted(z.namelist())
        assert files[0] == "coco.json" and len(files) == 3
        ids = {c["name"]: c["id"] for c in json.loads(z.read("coco.json"))["categories"]}
        label_map = np.asarray(Image.open(io.BytesIO(z.read(next(f for f in files if "/a_" in f)))))
    assert label_map.shape == (H, W)
    assert (label_map[cup_a] == ids["cup"]).all() and (label_map[box] == ids["plate"]).all()
    assert (label_map[~(cup_a | box)] == 0).all()


def test_import_refusals(client, keys):
    admin = keys["admin"]
    client.post("/v1/projects", json={"project_id": "p1", "labels": ["cup"]}, headers=admin)
    client.post("/v1/projects/p1/images", headers=admin, files=[("files", ("a.png", png(10), "image/png"))])
    base = {"images": [{"id": 1, "file_name": "a.png"}], "categories": [{"id": 1, "name": "cup"}, {"id": 2, "name": "dog"}]}
    cases = [
        ({"image_id": 1, "category_id": 2, "bbox": [0, 0, 5, 5]}, "annotations[0].category_id"),
        ({"image_id": 1, "category_id": 1, "segmentation": [[1, 2, 3]]}, "annotations[0].segmentation"),
        ({"image_id": 1, "category_id": 1, "segmentation": {"size": [10, 10], "counts": "abc"}},
         "annotations[0].segmentation.size"),
        ({"image_id": 1, "category_id": 1}, "annotations[0].segmentation"),
    ]
    for annotation, field in cases:
        reply = client.post("/v1/projects/p1/imports/coco", json={**base, "annotations": [annotation]}, headers=admin)
        assert reply.status_code == 422 and reply.json()["error"]["field"] == field, (annotation, reply.text)
    assert client.get("/v1/projects/p1/exports/coco", headers=keys["reviewer"]).json()["annotations"] == []
