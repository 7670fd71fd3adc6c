"""Regions of an image (whole image, patch grid, SLIC superpixels) and per-region aggregation.

A ``RegionGrid`` labels every pixel of the prediction map (``map_size``, maybe coarser than the
image) with its region; areas and boxes are in pixels of the original image (``image_size``).
Aggregation uses ``np.bincount`` over the label map, so cost is linear in pixels, never a Python loop.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage
from skimage.segmentation import slic

from services.common.active_learning.transforms import resize

# Fixed SLIC settings, so a superpixel (n_segments, segment_id) is reproducible from the image.
SLIC_SETTINGS = {"compactness": 10.0, "sigma": 1.0, "start_label": 0, "enforce_connectivity": True}


@dataclass
class RegionGrid:
    granularity: str  # "image" | "patch" | "superpixel"
    scale: int  # patch side in pixels, SLIC n_segments, 0 for the whole image
    labels: np.ndarray  # [h, w] int64 region id of each prediction-map pixel
    count: int
    area_px: np.ndarray  # [n] pixels of the original image
    boxes: np.ndarray  # [n, 4] x, y, width, height in image pixels
    image_size: tuple[int, int] = (0, 0)
    full_labels: np.ndarray | None = None  # [H, W] at image resolution (superpixels only)


def _nearest(labels_full: np.ndarray, map_size: tuple[int, int]) -> np.ndarray:
    """Label of each map pixel: the full-resolution label under its centre."""
    height, width = labels_full.shape
    rows = ((np.arange(map_size[0]) + 0.5) * height / map_size[0]).astype(np.int64)
    cols = ((np.arange(map_size[1]) + 0.5) * width / map_size[1]).astype(np.int64)
    return labels_full[rows[:, None], cols[None, :]]


def image_grid(map_size: tuple[int, int], image_size: tuple[int, int]) -> RegionGrid:
    height, width = image_size
    return RegionGrid("image", 0, np.zeros(map_size, np.int64), 1, np.array([height * width]),
                      np.array([[0, 0, width, height]]), image_size)


def patch_grid(map_size: tuple[int, int], image_size: tuple[int, int], size_px: int) -> RegionGrid:
    height, width = image_size
    n_rows, n_cols = -(-height // size_px), -(-width // size_px)
    rows = ((np.arange(map_size[0]) + 0.5) * height / map_size[0]).astype(np.int64) // size_px
    cols = ((np.arange(map_size[1]) + 0.5) * width / map_size[1]).astype(np.int64) // size_px
    labels = rows[:, None] * n_cols + cols[None, :]
    r, c = np.divmod(np.arange(n_rows * n_cols), n_cols)
    x, y = c * size_px, r * size_px
    w, h = np.minimum(size_px, width - x), np.minimum(size_px, height - y)
    return RegionGrid("patch", size_px, labels, n_rows * n_cols, w * h, np.stack([x, y, w, h], axis=1),
                      image_size)


def superpixel_grid(map_size: tuple[int, int], image_size: tuple[int, int], n_segments: int,
                    image: np.ndarray | None = None, probabilities: np.ndarray | None = None) -> RegionGrid:
    """SLIC on the image when its pixels are at hand, else on the (resized) probability map."""
    if image is not None:
        full = slic(image, n_segments=n_segments, channel_axis=-1 if image.ndim == 3 else None,
                    **SLIC_SETTINGS)
    else:
        maps = resize(probabilities.astype(np.float32), image_size).transpose(1, 2, 0)
        full = slic(maps, n_segments=n_segments, channel_axis=-1, convert2lab=False, **SLIC_SETTINGS)
    full = full.astype(np.int64)
    count = int(full.max()) + 1
    area = np.bincount(full.ravel(), minlength=count)
    boxes = np.zeros((count, 4), np.int64)
    for i, sl in enumerate(ndimage.find_objects(full + 1)):  # one slice pair per segment, not per pixel
        if sl is not None:
            boxes[i] = (sl[1].start, sl[0].start, sl[1].stop - sl[1].start, sl[0].stop - sl[0].start)
    return RegionGrid("superpixel", n_segments, _nearest(full, map_size), count, area, boxes, image_size, full)


def region_means(grid: RegionGrid, values: np.ndarray) -> np.ndarray:
    """Mean of a [h, w] map over each region; regions no map pixel falls in take the value at
    their box centre."""
    flat = grid.labels.ravel()
    counts = np.bincount(flat, minlength=grid.count)
    sums = np.bincount(flat, weights=values.ravel(), minlength=grid.count)
    means = sums / np.maximum(counts, 1)
    empty = np.flatnonzero(counts == 0)
    if empty.size:
        full_h, full_w = grid.image_size
        centre_r = ((grid.boxes[empty, 1] + grid.boxes[empty, 3] / 2) * values.shape[0] / full_h).astype(int)
        centre_c = ((grid.boxes[empty, 0] + grid.boxes[empty, 2] / 2) * values.shape[1] / full_w).astype(int)
        means[empty] = values[np.minimum(centre_r, values.shape[0] - 1), np.minimum(centre_c, values.shape[1] - 1)]
    return means


def region_class_means(grid: RegionGrid, probabilities: np.ndarray) -> np.ndarray:
    """[n, K] mean class probability of each region."""
    return np.stack([region_means(grid, p) for p in probabilities], axis=1)


@dataclass
class StackedGrids:
    """The grids of a chunk of items whose maps have one shape, as one label space: region r of item j
    is bin ``offsets[j] + r``, so one ``np.bincount`` aggregates a whole chunk."""
    labels: np.ndarray  # [N * h * w] offset label of every pixel of the stacked maps
    offsets: np.ndarray  # [N + 1]
    counts: np.ndarray  # [offsets[-1]] map pixels per (item, region)
    empty: np.ndarray  # bins no map pixel falls in
    empty_at: tuple[np.ndarray, np.ndarray, np.ndarray] | None  # (item, row, col) of their box centres


def stack_grids(grids: list[RegionGrid], map_size: tuple[int, int]) -> StackedGrids:
    offsets = np.concatenate([[0], np.cumsum([g.count for g in grids])]).astype(np.int64)
    if all(g is grids[0] for g in grids):  # one grid (patches, whole images): broadcast, no per-item copy
        labels = (grids[0].labels[None] + offsets[:-1, None, None]).ravel()
    else:
        labels = np.concatenate([g.labels.ravel() + o for g, o in zip(grids, offsets[:-1])])
    counts = np.bincount(labels, minlength=int(offsets[-1]))
    empty = np.flatnonzero(counts == 0)
    empty_at = None
    if empty.size:
        item = np.searchsorted(offsets, empty, side="right") - 1
        local = empty - offsets[item]
        boxes = np.stack([grids[j].boxes[r] for j, r in zip(item, local)])
        full = np.array([grids[j].image_size for j in item])
        rows = ((boxes[:, 1] + boxes[:, 3] / 2) * map_size[0] / full[:, 0]).astype(int)
        cols = ((boxes[:, 0] + boxes[:, 2] / 2) * map_size[1] / full[:, 1]).astype(int)
        empty_at = (item, np.minimum(rows, map_size[0] - 1), np.minimum(cols, map_size[1] - 1))
    return StackedGrids(labels, offsets, counts, empty, empty_at)


def stacked_means(stacked: StackedGrids, values: np.ndarray) -> np.ndarray:
    """``np.concatenate([region_means(grid_j, values[j]) for j])`` for ``values`` [N, h, w]: the same sums
    in the same order, in one pass."""
    sums = np.bincount(stacked.labels, weights=values.ravel(), minlength=len(stacked.counts))
    means = sums / np.maximum(stacked.counts, 1)
    if stacked.empty_at is not None:
        means[stacked.empty] = values[stacked.empty_at]
    return means
