"""Classic click-seeded segmentation with OpenCV GrabCut: the baseline, and an optional refinement
of the network's probability (the network's estimate seeds GrabCut instead of a rectangle)."""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

from services.segmentation.encoding import RADIUS, disk_maps
from services.simulation.clicker import Click
from services.simulation.protocol import Segmenter

PROBABLE_RADIUS = 4 * RADIUS


def _seed_clicks(labels: np.ndarray, clicks: Sequence[Click], probable: bool) -> None:
    height, width = labels.shape
    if probable:
        wide = disk_maps([c for c in clicks if c.positive], height, width, PROBABLE_RADIUS)[0]
        labels[wide > 0] = cv2.GC_PR_FGD
    pos, neg = disk_maps(clicks, height, width, RADIUS)
    labels[pos > 0] = cv2.GC_FGD
    labels[neg > 0] = cv2.GC_BGD


def _run(image: np.ndarray, labels: np.ndarray, iterations: int) -> np.ndarray:
    bgd, fgd = np.zeros((1, 65), np.float64), np.zeros((1, 65), np.float64)
    if (labels == cv2.GC_FGD).any() or (labels == cv2.GC_PR_FGD).any():
        cv2.grabCut(np.ascontiguousarray(image[..., ::-1]), labels, None, bgd, fgd, iterations,
                    cv2.GC_INIT_WITH_MASK)
    return np.isin(labels, (cv2.GC_FGD, cv2.GC_PR_FGD)).astype(np.float32)


def grabcut(image: np.ndarray, clicks: Sequence[Click], iterations: int = 5) -> np.ndarray:
    """Baseline: click disks sure object/background, a probable-object disk around positive clicks,
    the image border background, the rest probable background."""
    labels = np.full(image.shape[:2], cv2.GC_PR_BGD, np.uint8)
    labels[0, :], labels[-1, :], labels[:, 0], labels[:, -1] = (cv2.GC_BGD,) * 4
    _seed_clicks(labels, clicks, probable=True)
    return _run(image, labels, iterations)


def grabcut_segmenter(image: np.ndarray, iterations: int = 5) -> Segmenter:
    return lambda clicks, prev: grabcut(image, clicks, iterations)


def refine(image: np.ndarray, prob: np.ndarray, clicks: Sequence[Click], iterations: int = 2,
           sure: float = 0.95, margin: float = 0.25) -> np.ndarray:
    """GrabCut seeded by the network: confident pixels sure, the rest probable, click disks sure.

    Runs only in a window around the uncertain-or-object pixels and the clicks (``margin`` of its size
    added on each side); outside it the network's decision stands.
    """
    out = (prob > 0.49).astype(np.float32)
    ys, xs = np.nonzero(prob > 1 - sure)
    ys = np.concatenate([ys, [c.y for c in clicks]]).astype(int)
    xs = np.concatenate([xs, [c.x for c in clicks]]).astype(int)
    if len(ys) == 0:
        return out
    height, width = prob.shape
    pad_y, pad_x = int(margin * (ys.max() - ys.min() + 1)) + 8, int(margin * (xs.max() - xs.min() + 1)) + 8
    y0, y1 = max(0, ys.min() - pad_y), min(height, ys.max() + 1 + pad_y)
    x0, x1 = max(0, xs.min() - pad_x), min(width, xs.max() + 1 + pad_x)
    window = prob[y0:y1, x0:x1]
    labels = np.where(window > 0.49, cv2.GC_PR_FGD, cv2.GC_PR_BGD).astype(np.uint8)
    labels[window > sure] = cv2.GC_FGD
    labels[window < 1 - sure] = cv2.GC_BGD
    inside = [Click(c.x - x0, c.y - y0, c.positive) for c in clicks]
    _seed_clicks(labels, inside, probable=False)
    out[y0:y1, x0:x1] = _run(np.ascontiguousarray(image[y0:y1, x0:x1]), labels, iterations)
    return out
