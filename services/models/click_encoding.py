"""Click encoding: clicks -> disk maps -> the network input, and the zoom-in crop around the object.

Numpy and OpenCV only: this runs in the gRPC service, in the Triton python model and in training.
Network input channels: RGB (ImageNet-normalised), positive-click disks, negative-click disks, the
previous object probability, and optionally a colour-model prior (see ``colour_prior``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from services.common.clicks import Click
from services.models.click_disks import RADIUS, disk_maps
from services.models.colour_prior import colour_prior

MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)
INPUT_SIZE = 192


def encode(
    image: np.ndarray,
    clicks: Sequence[Click],
    prev_prob: np.ndarray | None,
    radius: float = RADIUS,
    with_prior: bool = True,
    valid: np.ndarray | None = None,
) -> np.ndarray:
    """(C, H, W) float32 network input for an RGB uint8 image; C is 6, or 7 with the colour prior."""
    height, width = image.shape[:2]
    rgb = ((image.astype(np.float32) / 255.0 - MEAN) / STD).transpose(2, 0, 1)
    clicks_map = disk_maps(clicks, height, width, radius)
    prev = np.zeros((1, height, width), np.float32) if prev_prob is None else prev_prob[None]
    channels = [rgb, clicks_map, prev.astype(np.float32)]
    if with_prior:
        channels.append(colour_prior(image, clicks, prev_prob, valid)[None])
    return np.concatenate(channels, axis=0)


@dataclass(frozen=True)
class Crop:
    """A square window of the image (may reach outside it), resized to ``size`` x ``size``."""

    x0: float
    y0: float
    side: float
    size: int

    @property
    def scale(self) -> float:
        return self.size / self.side

    def matrix(self) -> np.ndarray:
        s = self.scale
        return np.array([[s, 0, -self.x0 * s], [0, s, -self.y0 * s]], dtype=np.float64)

    def to_crop(self, click: Click) -> Click:
        x = (click.x + 0.5 - self.x0) * self.scale - 0.5
        y = (click.y + 0.5 - self.y0) * self.scale - 0.5
        return Click(int(round(x)), int(round(y)), click.positive)


def zoom_crop(
    shape: tuple[int, int],
    clicks: Sequence[Click],
    prev_prob: np.ndarray | None,
    size: int = INPUT_SIZE,
    expand: float = 1.4,
    min_fraction: float = 0.2,
) -> Crop:
    """RITM zoom-in: the whole image at first, later a square around the object estimate and clicks."""
    height, width = shape
    full = float(max(height, width))
    obj = np.zeros(shape, bool) if prev_prob is None else prev_prob > 0.49
    ys, xs = np.nonzero(obj)
    pos = [c for c in clicks if c.positive]
    if len(ys) == 0 or not pos:
        return Crop((width - full) / 2, (height - full) / 2, full, size)
    ys = np.concatenate([ys, [c.y for c in pos]])
    xs = np.concatenate([xs, [c.x for c in pos]])
    y_lo, y_hi, x_lo, x_hi = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    side = min(full, max(max(y_hi - y_lo, x_hi - x_lo) * expand, min_fraction * full))
    cx, cy = (x_lo + x_hi) / 2, (y_lo + y_hi) / 2
    x0 = cx - side / 2 if side > width else float(np.clip(cx - side / 2, 0, width - side))
    y0 = cy - side / 2 if side > height else float(np.clip(cy - side / 2, 0, height - side))
    return Crop(float(x0), float(y0), float(side), size)


def warp(array: np.ndarray, crop: Crop, nearest: bool = False, fill: float = 0) -> np.ndarray:
    """Cut ``crop`` out of ``array`` (H, W[, C]) and resize it to (size, size[, C])."""
    interp = cv2.INTER_NEAREST if nearest else cv2.INTER_AREA if crop.scale < 1 else cv2.INTER_LINEAR
    return cv2.warpAffine(
        array, crop.matrix(), (crop.size, crop.size), flags=interp,
        borderMode=cv2.BORDER_CONSTANT, borderValue=fill,
    )


def prepare(
    image: np.ndarray,
    clicks: Sequence[Click],
    prev_prob: np.ndarray | None,
    size: int = INPUT_SIZE,
    radius: float = RADIUS,
    with_prior: bool = True,
) -> tuple[np.ndarray, Crop]:
    """Network input (C, size, size) for the zoom-in crop of the image, and that crop."""
    crop = zoom_crop(image.shape[:2], clicks, prev_prob, size)
    image_c = warp(image, crop)
    prev_c = None if prev_prob is None else warp(prev_prob.astype(np.float32), crop)
    valid = warp(np.ones(image.shape[:2], np.uint8), crop, nearest=True) > 0
    clicks_c = [crop.to_crop(c) for c in clicks]
    return encode(image_c, clicks_c, prev_c, radius, with_prior, valid), crop


def restore(
    prob_crop: np.ndarray, crop: Crop, shape: tuple[int, int], prev_prob: np.ndarray | None
) -> np.ndarray:
    """Paste the crop's probability back at image resolution; outside the crop keep ``prev_prob``."""
    height, width = shape
    flags = cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP
    full = cv2.warpAffine(prob_crop.astype(np.float32), crop.matrix(), (width, height), flags=flags)
    inside = cv2.warpAffine(
        np.ones_like(prob_crop, np.uint8), crop.matrix(), (width, height),
        flags=cv2.INTER_NEAREST | cv2.WARP_INVERSE_MAP,
    ) > 0
    base = np.zeros(shape, np.float32) if prev_prob is None else prev_prob.astype(np.float32)
    return np.where(inside, full, base)
