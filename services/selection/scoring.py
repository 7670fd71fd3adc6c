"""Scores of one item's regions: every heuristic's pixel map aggregated over each region grid."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from services.selection.heuristics import pixel_maps
from services.selection.predictions import Prediction
from services.selection.regions import (RegionGrid, image_grid, patch_grid, region_class_means, region_means,
                                        superpixel_grid)

GRANULARITIES = ("image", "patch", "superpixel")


@dataclass(frozen=True)
class RegionSpec:
    granularity: str  # one of GRANULARITIES
    scale: int = 0  # patch side (px) or SLIC n_segments; 0 for image

    @property
    def key(self) -> str:
        return self.granularity if self.granularity == "image" else f"{self.granularity}:{self.scale}"


@dataclass
class RegionScores:
    spec: RegionSpec
    segment: np.ndarray  # [n] region id within the item's grid
    boxes: np.ndarray  # [n, 4] x, y, width, height (image pixels)
    area_px: np.ndarray  # [n]
    majority_class: np.ndarray  # [n] argmax of the region's mean class probability
    confidence: np.ndarray  # [n] that mean probability
    scores: dict[str, np.ndarray]  # heuristic name -> [n] in [0, 1], NaN where inputs are missing

    def __len__(self) -> int:
        return len(self.segment)


def make_grid(spec: RegionSpec, prediction: Prediction, image_size: tuple[int, int],
              image: np.ndarray | None = None) -> RegionGrid:
    map_size = prediction.probabilities.shape[1:]
    if spec.granularity == "image":
        return image_grid(map_size, image_size)
    if spec.granularity == "patch":
        return patch_grid(map_size, image_size, spec.scale)
    return superpixel_grid(map_size, image_size, spec.scale, image=image,
                           probabilities=None if image is not None else prediction.probabilities)


def score_prediction(prediction: Prediction, specs: list[RegionSpec], image_size: tuple[int, int] | None = None,
                     image: np.ndarray | None = None, grids: dict | None = None) -> list[RegionScores]:
    """Scores of ``prediction`` per region, for each spec. ``image_size`` defaults to the map size;
    ``grids`` caches region grids by spec (the same image always gets the same superpixels)."""
    image_size = tuple(image_size or prediction.probabilities.shape[1:])
    maps = pixel_maps(prediction.probabilities, prediction.members, prediction.augmented)
    results = []
    for spec in specs:
        grid = grids.get(spec) if grids is not None else None
        if grid is None:
            grid = make_grid(spec, prediction, image_size, image)
            if grids is not None:
                grids[spec] = grid
        means = region_class_means(grid, prediction.probabilities)
        nan = np.full(grid.count, np.nan)
        scores = {name: (region_means(grid, m) if m is not None else nan).astype(np.float32)
                  for name, m in maps.items()}
        results.append(RegionScores(spec, np.arange(grid.count), grid.boxes, grid.area_px,
                                    means.argmax(axis=1), means.max(axis=1).astype(np.float32), scores))
    return results


def present_classes(prediction: Prediction, min_fraction: float = 0.01) -> list[int]:
    """Classes predicted (argmax) on at least ``min_fraction`` of the pixels: the item's classes for
    label propagation and class buckets when humans gave no image-level labels."""
    votes = np.bincount(prediction.probabilities.argmax(axis=0).ravel(), minlength=prediction.classes)
    return [int(k) for k in np.flatnonzero(votes >= min_fraction * votes.sum())]

