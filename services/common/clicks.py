"""Clicks and the one protocol every interactive segmenter follows.

A ``Segmenter`` (the network through Triton, a classic baseline, a local checkpoint) is a callable
``(clicks, previous_probability) -> probability map`` for one image. Ground-truth annotations are
0/128/255 masks: ``IGNORE`` (128) pixels are left out of IoU and never clicked; above 128 is object.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

IGNORE = 128
THRESHOLD = 0.49  # RITM binarises probabilities at > 0.49


@dataclass(frozen=True)
class Click:
    """One click in image pixel coordinates (x to the right, y down)."""

    x: int
    y: int
    positive: bool


Segmenter = Callable[[Sequence[Click], "np.ndarray | None"], np.ndarray]


def split_annotation(annotation: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Split a 0/128/255 mask into (object, ignore) boolean maps."""
    annotation = np.asarray(annotation)
    return annotation > IGNORE, annotation == IGNORE
