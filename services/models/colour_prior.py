"""A click-seeded colour model: the cheap classic cue the network refines.

Colour histograms (8 bins per channel, lightly smoothed) of object samples (disks around positive
clicks, the previous object estimate) and background samples (disks around negative clicks, the
window border, outside the previous estimate) give a per-pixel object probability, as GrabCut's
colour term does, without the graph cut. A small network cannot learn such a global per-image
model from 800 images, so it gets it as an input channel.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from services.common.clicks import Click

BINS = 8
SAMPLE_RADIUS = 12
BORDER = 0.04


def _smooth(hist: np.ndarray) -> np.ndarray:
    for axis in range(3):
        padded = np.pad(hist, [(1, 1) if a == axis else (0, 0) for a in range(3)], mode="edge")
        lo = np.take(padded, range(0, BINS), axis=axis)
        mid = np.take(padded, range(1, BINS + 1), axis=axis)
        hi = np.take(padded, range(2, BINS + 2), axis=axis)
        hist = 0.25 * lo + 0.5 * mid + 0.25 * hi
    return hist


def _histogram(index: np.ndarray, weight: np.ndarray) -> np.ndarray:
    hist = np.bincount(index.ravel(), weights=weight.ravel(), minlength=BINS**3)
    hist = _smooth(hist.reshape(BINS, BINS, BINS)).ravel() + 1e-3
    return hist / hist.sum()


def colour_prior(
    image: np.ndarray,
    clicks: Sequence[Click],
    prev_prob: np.ndarray | None,
    valid: np.ndarray | None = None,
) -> np.ndarray:
    """(H, W) float32 in [0, 1]: object probability of each pixel's colour (0.5 where unknown)."""
    height, width = image.shape[:2]
    q = (image.astype(np.int32) * BINS) // 256
    index = (q[..., 0] * BINS + q[..., 1]) * BINS + q[..., 2]
    ys, xs = np.ogrid[:height, :width]
    fg = np.zeros((height, width), np.float32)
    bg = np.zeros((height, width), np.float32)
    for click in clicks:
        disk = (ys - click.y) ** 2 + (xs - click.x) ** 2 <= SAMPLE_RADIUS**2
        (fg if click.positive else bg)[disk] = 1.0
    if not fg.any():
        return np.full((height, width), 0.5, np.float32)
    band = max(2, int(BORDER * max(height, width)))
    border = np.zeros((height, width), bool)
    border[:band], border[-band:], border[:, :band], border[:, -band:] = True, True, True, True
    bg[border] = np.maximum(bg[border], 0.5)
    if prev_prob is not None:
        fg = np.maximum(fg, 0.5 * (prev_prob > 0.49))
        bg = np.maximum(bg, 0.25 * (prev_prob <= 0.49))
    if valid is not None:
        fg, bg = fg * valid, bg * valid
    p_fg, p_bg = _histogram(index, fg), _histogram(index, bg)
    prior = (p_fg / (p_fg + p_bg))[index].astype(np.float32)
    return prior if valid is None else np.where(valid, prior, 0.5).astype(np.float32)
