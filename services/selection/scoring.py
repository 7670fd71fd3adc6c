"""Scores of items' regions: every heuristic's pixel map aggregated over each region grid.

``score_predictions`` scores many items at once: items whose maps have the same shapes (and image
size) are stacked into chunks, every heuristic runs once per chunk, and each aggregation is one
``np.bincount`` over the chunk's label maps offset so that every (item, region) gets its own bin.
Per item the result is exactly that of ``score_prediction`` (same sums in the same order); only the
Python overhead per item goes away.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from services.common.active_learning.heuristics import pixel_maps
from services.common.active_learning.regions import (
    RegionGrid,
    image_grid,
    patch_grid,
    region_class_means,
    region_means,
    stack_grids,
    stacked_means,
    superpixel_grid,
)
from services.selection.predictions import Prediction

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


# Elements of the largest stacked array (members) per chunk: bounds the memory of batch scoring
# (~16 MiB of float32 per stacked array, a few temporaries of that size at a time).
CHUNK_ELEMENTS = 1 << 22


def _shape_key(prediction: Prediction, image_size: tuple[int, int]) -> tuple:
    shape = lambda a: None if a is None else a.shape  # noqa: E731
    return prediction.probabilities.shape, shape(prediction.members), shape(prediction.augmented), image_size


def score_predictions(predictions: list[Prediction], specs: list[RegionSpec],
                      image_sizes: list[tuple[int, int] | None] | None = None,
                      images: list[np.ndarray | None] | None = None,
                      grids: list[dict | None] | None = None) -> list[list[RegionScores]]:
    """``[score_prediction(p, specs, size, image, grid) for each item]``, batched across items of equal
    shape. ``grids`` is one cache dict per item (or None), as in ``score_prediction``; whole-image and
    patch grids depend only on the sizes, so each is built once per call."""
    n = len(predictions)
    sizes = [tuple(s or p.probabilities.shape[1:]) for s, p in
             zip(image_sizes if image_sizes is not None else [None] * n, predictions)]
    images = images if images is not None else [None] * n
    grids = grids if grids is not None else [None] * n
    groups: dict[tuple, list[int]] = {}
    for i, (p, size) in enumerate(zip(predictions, sizes)):
        groups.setdefault(_shape_key(p, size), []).append(i)
    results: list[list[RegionScores] | None] = [None] * n
    shared: dict[tuple, RegionGrid] = {}
    for (p_shape, m_shape, a_shape, size), members in groups.items():
        largest = max(int(np.prod(s)) for s in (p_shape, m_shape, a_shape) if s is not None)
        step = max(1, CHUNK_ELEMENTS // largest)
        for begin in range(0, len(members), step):
            chunk = members[begin: begin + step]
            stack = lambda get: None if get(predictions[chunk[0]]) is None else np.stack(  # noqa: E731
                [get(predictions[i]) for i in chunk])
            probabilities = stack(lambda p: p.probabilities)
            maps = pixel_maps(probabilities, stack(lambda p: p.members), stack(lambda p: p.augmented))
            per_spec = []
            for spec in specs:
                item_grids = []
                for i in chunk:
                    grid = grids[i].get(spec) if grids[i] is not None else None
                    if grid is None and spec.granularity != "superpixel":
                        key = (spec, p_shape[1:], size)
                        grid = shared.get(key) or shared.setdefault(key, make_grid(spec, predictions[i], size))
                    if grid is None:
                        grid = make_grid(spec, predictions[i], size, images[i])
                    if grids[i] is not None:
                        grids[i][spec] = grid
                    item_grids.append(grid)
                per_spec.append(_score_chunk(spec, item_grids, probabilities, maps))
            for j, i in enumerate(chunk):
                results[i] = [scores[j] for scores in per_spec]
    return results


def _score_chunk(spec: RegionSpec, item_grids: list[RegionGrid], probabilities: np.ndarray,
                 maps: dict[str, np.ndarray | None]) -> list[RegionScores]:
    stacked = stack_grids(item_grids, probabilities.shape[2:])
    offsets = stacked.offsets
    mean = lambda values: stacked_means(stacked, values)  # noqa: E731
    class_means = np.stack([mean(probabilities[:, k]) for k in range(probabilities.shape[1])], axis=1)
    majority, confidence = class_means.argmax(axis=1), class_means.max(axis=1).astype(np.float32)
    nan = np.full(offsets[-1], np.nan, np.float32)
    scores = {name: (mean(m) if m is not None else nan).astype(np.float32) for name, m in maps.items()}
    out = []
    for j, grid in enumerate(item_grids):
        part = slice(offsets[j], offsets[j + 1])
        out.append(RegionScores(spec, np.arange(grid.count), grid.boxes, grid.area_px, majority[part],
                                confidence[part], {name: v[part] for name, v in scores.items()}))
    return out


def present_classes(prediction: Prediction, min_fraction: float = 0.01) -> list[int]:
    """Classes predicted (argmax) on at least ``min_fraction`` of the pixels: the item's classes for
    label propagation and class buckets when humans gave no image-level labels."""
    votes = np.bincount(prediction.probabilities.argmax(axis=0).ravel(), minlength=prediction.classes)
    return [int(k) for k in np.flatnonzero(votes >= min_fraction * votes.sum())]

