"""Synthetic projects for the training tests: images whose objects a tiny network learns in seconds.

Each image is textured noise with one disc of a class colour (``cat`` reddish, ``dog`` bluish) at a random
place and size; its annotation is the disc's mask. A task model trained on them finds the discs by colour;
one trained on shuffled masks (each image given another image's mask) can learn no more than where discs
tend to be.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
from PIL import Image

from annotation.v1 import common_pb2
from services.common.masks import encode_rle
from services.common.settings import served_model_dir
from services.quality import features
from services.training.annotations import Annotation

# The small network trained from scratch, served beside the default: quick to fine-tune in tests.
SCRATCH_BASE = served_model_dir("clickseg")

COLOURS = {"cat": (200, 40, 40), "dog": (40, 60, 210)}


def synthetic_image(rng: np.random.Generator, label: str, size: int = 40) -> tuple[np.ndarray, np.ndarray]:
    image = rng.integers(60, 190, size=(size, size, 3)).astype(np.float32)
    radius = rng.uniform(size * 0.15, size * 0.3)
    cy, cx = rng.uniform(radius, size - radius, 2)
    yy, xx = np.mgrid[:size, :size]
    mask = (yy - cy) ** 2 + (xx - cx) ** 2 <= radius ** 2
    image[mask] = np.asarray(COLOURS[label]) + rng.normal(0, 12, size=(int(mask.sum()), 3))
    return np.clip(image, 0, 255).astype(np.uint8), mask


def write_project(folder: Path, project_id: str, n: int, seed: int = 0, shuffled: bool = False,
                  id_prefix: str = "a", size: int = 40) -> list[Annotation]:
    """``n`` images under ``folder`` and their annotations (masks of other images when ``shuffled``)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    images, masks, labels = [], [], []
    for i in range(n):
        label = "cat" if i % 2 == 0 else "dog"
        image, mask = synthetic_image(rng, label, size)
        path = folder / f"img{i:03d}.png"
        Image.fromarray(image).save(path)
        images.append(path)
        masks.append(mask)
        labels.append(label)
    order = np.roll(np.arange(n), 1) if shuffled else np.arange(n)
    start = datetime(2026, 1, 1, tzinfo=UTC)
    out = []
    for i, path in enumerate(images):
        size, counts = encode_rle(masks[order[i]])
        out.append(Annotation(project_id=project_id, annotation_id=f"{id_prefix}{i:03d}", image_id=f"img{i:03d}",
                              uri=path.as_uri(), width=size[1], height=size[0], label=labels[i], mask_counts=counts,
                              clicks=[{"x": 3.0, "y": 4.0, "positive": True, "t_ms": 500 + i, "index": 0}],
                              annotator_id="ann", model_version="clickseg:1",
                              submit_time=start + timedelta(seconds=i)))
    return out


def event(a: Annotation) -> common_pb2.AnnotationSubmitted:
    """The AnnotationSubmitted message of a synthetic annotation."""
    message = common_pb2.AnnotationSubmitted(
        project_id=a.project_id, annotation_id=a.annotation_id, session_id=f"s-{a.annotation_id}",
        annotator_id=a.annotator_id, label=a.label, model_version=a.model_version,
        image=common_pb2.ImageRef(image_id=a.image_id, uri=a.uri, width=a.width, height=a.height),
        mask=common_pb2.Mask(size=[a.height, a.width], counts=a.mask_counts),
        clicks=[common_pb2.Click(**c) for c in a.clicks], pseudo_label=a.pseudo_label, total_time_ms=900)
    if a.submit_time is not None:
        message.submit_time.FromDatetime(a.submit_time)
    return message


STEP_NAMES, SESSION_NAMES = [f"s{i}" for i in range(4)], [f"g{i}" for i in range(3)]
# the quality service's own features: a model trained on reviews with these scores its sessions
SERVICE_NAMES = list(features.STEP_FEATURES), list(features.SESSION_FEATURES)


def reviewed(image_ids: list[str], project_id: str, per_image: int = 4, seed: int = 0, shuffled: bool = False,
             prefix: str = "s", names: tuple[list[str], list[str]] = (STEP_NAMES, SESSION_NAMES)) -> list[dict]:
    """``SessionReviewed`` payloads (proto3 JSON) of ``per_image`` sessions per image: the true IoU follows the
    second session feature (and noise); the base model's score is a random guess."""
    rng = np.random.default_rng(seed)
    step_names, session_names = names
    out = []
    for image_id in image_ids:
        for k in range(per_image):
            signal = rng.normal()
            iou = float(np.clip(0.85 + 0.08 * signal + rng.normal(0, 0.02), 0, 1))
            steps = rng.normal(size=(int(rng.integers(1, 5)), len(step_names)))
            out.append({"project_id": project_id, "session_id": f"{prefix}-{image_id}-{k}", "image_id": image_id,
                        "true_iou": iou, "steps": [{"values": row.tolist()} for row in steps],
                        "session_features": [float(rng.normal()), float(signal),
                                             *rng.normal(size=len(session_names) - 2).tolist()],
                        "step_feature_names": step_names, "session_feature_names": session_names,
                        "base_probability_below": float(rng.random())})
    if shuffled:
        ious = [m["true_iou"] for m in out]
        for m, iou in zip(out, np.random.default_rng(seed + 1).permutation(ious)):
            m["true_iou"] = float(iou)
    return out
