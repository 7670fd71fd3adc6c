"""Classic click-seeded segmentation with OpenCV GrabCut: the baseline, and the refinement of the
network's probability (the network's estimate seeds GrabCut instead of a rectangle).

Numpy, OpenCV and ``click_disks`` only: Triton's Python backend runs the refinement inside the click
model (``deploy/triton/models/*/1/model.py``), where the project's other packages are not installed.
Clicks are anything with ``x``, ``y`` and ``positive`` (``services.common.clicks.Click`` here).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import NamedTuple

import cv2
import numpy as np

from services.models.click_disks import RADIUS, disk_maps

PROBABLE_RADIUS = 4 * RADIUS


class _Click(NamedTuple):
    x: int
    y: int
    positive: bool


def _seed_clicks(labels: np.ndarray, clicks: Sequence) -> None:
    height, width = labels.shape
    wide = disk_maps([c for c in clicks if c.positive], height, width, PROBABLE_RADIUS)[0]
    labels[wide > 0] = cv2.GC_PR_FGD
    pos, neg = disk_maps(clicks, height, width, RADIUS)
    labels[pos > 0] = cv2.GC_FGD
    labels[neg > 0] = cv2.GC_BGD


def _baseline_seeds(labels: np.ndarray, clicks: Sequence) -> np.ndarray:
    """The baseline's hard constraints on top of ``labels``: image border background, click disks."""
    labels[0, :], labels[-1, :], labels[:, 0], labels[:, -1] = (cv2.GC_BGD,) * 4
    _seed_clicks(labels, clicks)
    return labels


# GrabCut fits a 5-component colour GMM to each side (k-means inside OpenCV): with fewer samples than
# components on either side it asserts, which tiny images and click disks covering the whole window reach.
GMM_COMPONENTS = 5


def _run(image: np.ndarray, labels: np.ndarray, iterations: int) -> np.ndarray:
    """The cut of ``labels``; the labels as they are when one side has too few pixels to model."""
    bgd, fgd = np.zeros((1, 65), np.float64), np.zeros((1, 65), np.float64)
    objectish = np.isin(labels, (cv2.GC_FGD, cv2.GC_PR_FGD))
    if GMM_COMPONENTS <= np.count_nonzero(objectish) <= objectish.size - GMM_COMPONENTS:
        cv2.grabCut(np.ascontiguousarray(image[..., ::-1]), labels, None, bgd, fgd, iterations,
                    cv2.GC_INIT_WITH_MASK)
    return np.isin(labels, (cv2.GC_FGD, cv2.GC_PR_FGD)).astype(np.float32)


def grabcut(image: np.ndarray, clicks: Sequence, iterations: int = 5) -> np.ndarray:
    """Baseline: click disks sure object/background, a probable-object disk around positive clicks,
    the image border background, the rest probable background."""
    return _run(image, _baseline_seeds(np.full(image.shape[:2], cv2.GC_PR_BGD, np.uint8), clicks), iterations)


def grabcut_segmenter(image: np.ndarray, iterations: int = 5) -> Callable:
    return lambda clicks, prev: grabcut(image, clicks, iterations)


# The refinement cuts a window around the object and works on it at most this size: measured on
# GrabCut's 50 images with the shipped network, NoC@90 4.32 -> 3.90 and 600 -> 210 ms p50 per click
# (a local colour model, and a coarser graph that follows the network's smooth boundary).
REFINE_MAX_SIDE = 320
REFINE_MARGIN = 0.25


def _object_window(prob: np.ndarray, clicks: Sequence, margin: float) -> tuple[int, int, int, int] | None:
    """(y0, y1, x0, x1) around the network's object and the positive clicks, widened by ``margin`` of
    its side plus the probable-object disk; None when there is neither."""
    ys, xs = np.nonzero(prob > 0.5)
    ys = np.concatenate([ys, [c.y for c in clicks if c.positive]]).astype(int)
    xs = np.concatenate([xs, [c.x for c in clicks if c.positive]]).astype(int)
    if len(ys) == 0:
        return None
    height, width = prob.shape
    y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    pad = int(margin * max(y1 - y0, x1 - x0)) + 2 * PROBABLE_RADIUS
    return max(0, y0 - pad), min(height, y1 + pad), max(0, x0 - pad), min(width, x1 + pad)


def refine(
    image: np.ndarray,
    prob: np.ndarray,
    clicks: Sequence,
    iterations: int = 3,
    max_side: int = REFINE_MAX_SIDE,
    margin: float = REFINE_MARGIN,
) -> np.ndarray:
    """GrabCut initialised by the network: its decision as probable object/background, the seeds of
    the baseline as hard constraints (click disks sure, a probable-object disk around positive
    clicks, the border of the window background), in a window around the object downscaled to
    ``max_side``; outside the window is background, the click disks keep their label at full size.

    The network never fixes a pixel for sure: hard constraints from its confident regions carried
    its mistakes into the cut (measured on the first 25 GrabCut images with the same checkpoint:
    NoC@90 6.16 that way, 4.64 this way, 6.20 for the GrabCut baseline).
    """
    window = _object_window(prob, clicks, margin)
    out = np.zeros(prob.shape, np.float32)
    if window is None:
        return out
    y0, y1, x0, x1 = window
    height, width = y1 - y0, x1 - x0
    inside = [_Click(c.x - x0, c.y - y0, c.positive) for c in clicks if x0 <= c.x < x1 and y0 <= c.y < y1]
    scale = min(1.0, max_side / max(height, width))
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    small_image = cv2.resize(image[y0:y1, x0:x1], size, interpolation=cv2.INTER_AREA)
    small_prob = cv2.resize(prob[y0:y1, x0:x1], size, interpolation=cv2.INTER_AREA)
    small_clicks = [_Click(min(size[0] - 1, int(c.x * scale)), min(size[1] - 1, int(c.y * scale)), c.positive)
                    for c in inside]
    labels = np.where(small_prob > 0.5, cv2.GC_PR_FGD, cv2.GC_PR_BGD).astype(np.uint8)
    cut = _run(small_image, _baseline_seeds(labels, small_clicks), iterations)
    # a mask again, so that the stored uint8 map and every threshold read it the same
    window_out = (cv2.resize(cut, (width, height), interpolation=cv2.INTER_LINEAR) >= 0.5).astype(np.float32)
    pos, neg = disk_maps(inside, height, width, RADIUS)
    window_out[pos > 0], window_out[neg > 0] = 1.0, 0.0
    out[y0:y1, x0:x1] = window_out
    return out
