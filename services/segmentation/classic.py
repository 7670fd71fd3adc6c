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


def _seed_clicks(labels: np.ndarray, clicks: Sequence[Click]) -> None:
    height, width = labels.shape
    wide = disk_maps([c for c in clicks if c.positive], height, width, PROBABLE_RADIUS)[0]
    labels[wide > 0] = cv2.GC_PR_FGD
    pos, neg = disk_maps(clicks, height, width, RADIUS)
    labels[pos > 0] = cv2.GC_FGD
    labels[neg > 0] = cv2.GC_BGD


def _baseline_seeds(labels: np.ndarray, clicks: Sequence[Click]) -> np.ndarray:
    """The baseline's hard constraints on top of ``labels``: image border background, click disks."""
    labels[0, :], labels[-1, :], labels[:, 0], labels[:, -1] = (cv2.GC_BGD,) * 4
    _seed_clicks(labels, clicks)
    return labels


def _run(image: np.ndarray, labels: np.ndarray, iterations: int) -> np.ndarray:
    bgd, fgd = np.zeros((1, 65), np.float64), np.zeros((1, 65), np.float64)
    if (labels == cv2.GC_FGD).any() or (labels == cv2.GC_PR_FGD).any():
        cv2.grabCut(np.ascontiguousarray(image[..., ::-1]), labels, None, bgd, fgd, iterations,
                    cv2.GC_INIT_WITH_MASK)
    return np.isin(labels, (cv2.GC_FGD, cv2.GC_PR_FGD)).astype(np.float32)


def grabcut(image: np.ndarray, clicks: Sequence[Click], iterations: int = 5) -> np.ndarray:
    """Baseline: click disks sure object/background, a probable-object disk around positive clicks,
    the image border background, the rest probable background."""
    return _run(image, _baseline_seeds(np.full(image.shape[:2], cv2.GC_PR_BGD, np.uint8), clicks), iterations)


def grabcut_segmenter(image: np.ndarray, iterations: int = 5) -> Segmenter:
    return lambda clicks, prev: grabcut(image, clicks, iterations)


def refine(image: np.ndarray, prob: np.ndarray, clicks: Sequence[Click], iterations: int = 3) -> np.ndarray:
    """GrabCut initialised by the network: its decision as probable object/background, the seeds of
    the baseline as hard constraints (click disks sure, a probable-object disk around positive
    clicks, the image border background).

    The network never fixes a pixel for sure: hard constraints from its confident regions carried
    its mistakes into the cut (measured on the first 25 GrabCut images with the same checkpoint:
    NoC@90 6.16 that way, 4.64 this way, 6.20 for the GrabCut baseline).
    """
    labels = np.where(prob > 0.5, cv2.GC_PR_FGD, cv2.GC_PR_BGD).astype(np.uint8)
    return _run(image, _baseline_seeds(labels, clicks), iterations)
