"""Click disks: the one rasterisation of clicks as maps, numpy only.

Its own module because Triton's Python backend imports it (through ``grabcut``) without the project's
other dependencies; clicks are anything with ``x``, ``y`` and ``positive``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

RADIUS = 5


def disk_maps(clicks: Sequence, height: int, width: int, radius: float = RADIUS) -> np.ndarray:
    """(2, H, W) float32: 1 inside a disk of ``radius`` px around each positive / negative click."""
    maps = np.zeros((2, height, width), dtype=np.float32)
    ys, xs = np.ogrid[:height, :width]
    for click in clicks:
        disk = (ys - click.y) ** 2 + (xs - click.x) ** 2 <= radius**2
        maps[0 if click.positive else 1][disk] = 1.0
    return maps
