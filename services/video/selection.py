"""Which samples of a video a human labels next: frames, rectangles or superpixels.

Each round scores every candidate region of every frame by the mean normalised entropy of the current
propagated probability, takes the most uncertain half and clusters it into ``b`` clusters (b = the
round's budget), and sends the member nearest each centroid: the selection service's uncertainty +
diversity (``services.common.active_learning.diversity.select_diverse``, its regions and heuristics), applied to the
frames of one video. Clustering features: position in time and space, mean probability, uncertainty and
mean colour, standardised, so a batch spreads over the video instead of piling onto one hard frame.
Regions already mostly labelled are not candidates again.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from services.common.active_learning.diversity import select_diverse
from services.common.active_learning.heuristics import max_entropy
from services.common.active_learning.regions import (
    RegionGrid,
    image_grid,
    patch_grid,
    stack_grids,
    stacked_means,
    superpixel_grid,
)

# name -> (RegionGrid granularity, scale: patch side in original pixels or SLIC n_segments)
GRANULARITIES: dict[str, tuple[str, int]] = {
    "frame": ("image", 0),
    "rect64": ("patch", 64),
    "rect16": ("patch", 16),
    "superpixel": ("superpixel", 300),
}
LABELLED_ENOUGH = 0.5  # a region with this fraction of its pixels labelled is no longer a candidate


@dataclass
class VideoCandidates:
    frame: np.ndarray  # [n] frame index
    region: np.ndarray  # [n] region id in that frame's grid
    uncertainty: np.ndarray  # [n] in [0, 1]
    features: np.ndarray  # [n, d] standardised clustering features
    grids: list[RegionGrid]  # one per frame

    def pixels(self, row: int) -> np.ndarray:
        """Bool [H, W] pixels (working resolution) of candidate ``row``."""
        return self.grids[self.frame[row]].labels == self.region[row]


def make_grids(granularity: str, frames: np.ndarray, original_size: tuple[int, int]) -> list[RegionGrid]:
    if granularity not in GRANULARITIES:
        raise ValueError(f"unknown granularity {granularity!r}; one of {', '.join(GRANULARITIES)}")
    kind, scale = GRANULARITIES[granularity]
    map_size = frames.shape[1:3]
    if kind == "image":
        return [image_grid(map_size, original_size)] * len(frames)
    if kind == "patch":
        return [patch_grid(map_size, original_size, scale)] * len(frames)  # one grid, shared by all frames
    return [superpixel_grid(map_size, map_size, scale, image=f) for f in frames]


def candidates(prob: np.ndarray, frames: np.ndarray, grids: list[RegionGrid], known: np.ndarray) -> VideoCandidates:
    """Score every region of every frame; ``prob`` [T, H, W] object probability, ``known`` labelled pixels."""
    length, height, width = prob.shape
    stacked = stack_grids(grids, (height, width))
    two_class = np.stack([1 - prob, prob], axis=1)  # [T, 2, H, W]
    uncertainty = stacked_means(stacked, max_entropy(two_class))
    labelled = stacked_means(stacked, known.astype(np.float32))
    mean_prob = stacked_means(stacked, prob)
    colour = np.stack([stacked_means(stacked, frames[..., c].astype(np.float32) / 255) for c in range(3)], 1)
    frame = (np.searchsorted(stacked.offsets, np.arange(stacked.offsets[-1]), side="right") - 1)
    region = np.arange(stacked.offsets[-1]) - stacked.offsets[frame]
    ys, xs = np.mgrid[:height, :width]
    cy = stacked_means(stacked, np.broadcast_to(ys / height, prob.shape).astype(np.float32))
    cx = stacked_means(stacked, np.broadcast_to(xs / width, prob.shape).astype(np.float32))
    raw = np.column_stack([frame / max(1, length - 1), cy, cx, mean_prob, uncertainty, colour])
    features = (raw - raw.mean(axis=0)) / (raw.std(axis=0) + 1e-6)
    keep = (labelled < LABELLED_ENOUGH) & (stacked.counts > 0)
    return VideoCandidates(frame[keep], region[keep], uncertainty[keep], features[keep].astype(np.float32), grids)


def select(cands: VideoCandidates, budget: int, seed: int = 0) -> list[int]:
    """Rows of ``budget`` (at most) distinct candidates: centroids of the uncertain half, most uncertain first."""
    if budget < 1:
        raise ValueError(f"budget must be at least 1, got {budget}")
    if len(cands.frame) == 0:
        return []
    rows = np.arange(len(cands.frame))
    chosen, _ = select_diverse(rows, cands.uncertainty, lambda r: cands.features[r], budget, seed)
    return [int(r) for r in chosen]
