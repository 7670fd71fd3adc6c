"""The statistics of a probability map that every click reports (``ProbabilityStats`` in the proto)."""

from __future__ import annotations

import numpy as np

from services.common.clicks import Click
from services.models.click_encoding import RADIUS


def probability_stats(
    prob: np.ndarray, threshold: float, last_click: Click | None, network_prob: np.ndarray | None = None
) -> dict:
    """The ProbabilityStats of the proto: the area from the (H, W) map ``prob``, the confidences from
    ``network_prob`` when given (the network's map before a refinement), else from ``prob``."""
    mask = prob > threshold
    source = prob if network_prob is None else network_prob
    confidence = np.maximum(source, 1 - source)
    click_confidence = 0.0
    if last_click is not None:
        height, width = source.shape
        ys, xs = np.ogrid[:height, :width]
        disk = (ys - last_click.y) ** 2 + (xs - last_click.x) ** 2 <= RADIUS**2
        click_confidence = float(confidence[disk].mean()) if disk.any() else 0.0
    return {
        "mean_foreground_probability": float(source[mask].mean()) if mask.any() else 0.0,
        "mean_confidence": float(confidence.mean()),
        "uncertain_fraction": float(((source >= 0.25) & (source <= 0.75)).mean()),
        "click_confidence": click_confidence,
        "area_px": int(mask.sum()),
        "threshold": float(threshold),
    }
