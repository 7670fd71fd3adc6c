"""Masks on the wire (COCO RLE via pycocotools), IoU, and resizing of boolean masks."""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np
from pycocotools import mask as mask_utils

from services.common.errors import InvalidArgument


def encode_rle(mask: np.ndarray) -> tuple[list[int], str]:
    """Binary (H, W) mask -> ([H, W], COCO compressed counts string)."""
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return [int(v) for v in rle["size"]], rle["counts"].decode("ascii")


def runs_from_counts(counts: str, max_runs: int | None = None) -> np.ndarray:
    """Run lengths of a COCO compressed counts string (pycocotools' ``rleFrString``), checked.

    Parsed here rather than by pycocotools because its decoder trusts the runs and writes past the
    mask on hostile input. Vectorised: a per-character Python loop spent ~1 s per MB, so a request
    near the gRPC message limit held a server thread for half a minute. ``max_runs`` refuses a
    string with more runs than its mask can have, before any per-run array is made.
    """
    c = np.frombuffer(counts.encode("ascii"), dtype=np.uint8) - np.uint8(48)  # below '0' wraps past 63
    if c.size == 0:
        return np.zeros(0, dtype=np.int64)
    bad = np.flatnonzero(c > 63)
    if bad.size:
        raise ValueError(f"character {counts[bad[0]]!r} at {bad[0]} is not in the RLE alphabet")
    ends = np.flatnonzero((c & 0x20) == 0)  # the last character of each number
    if ends.size == 0 or ends[-1] != c.size - 1:
        raise ValueError("the string ends inside a number")
    if max_runs is not None and ends.size > max_runs:
        raise ValueError(f"{ends.size} runs, more than the mask's {max_runs} possible")
    starts = np.concatenate(([0], ends[:-1] + 1))
    lengths = ends - starts + 1
    if lengths.max() > 7:
        raise ValueError("a number is too long")
    values = np.zeros(ends.size, dtype=np.int64)
    for k in range(int(lengths.max())):  # the k-th 5-bit group of every number that has one
        has = np.flatnonzero(lengths > k)
        values[has] += (c[starts[has] + k] & 0x1F).astype(np.int64) << (5 * k)
    negative = (c[ends] & 0x10) != 0
    values[negative] -= np.left_shift(np.int64(1), 5 * lengths[negative])
    runs = values.copy()  # from the fourth on, a run is a delta to the run two before it
    runs[1::2] = np.cumsum(values[1::2])
    runs[2::2] = np.cumsum(values[2::2])
    below = np.flatnonzero(runs < 0)
    if below.size:
        raise ValueError(f"run {below[0]} is negative")
    return runs


def decode_rle(size: Sequence[int], counts: str, shape: tuple[int, int], field: str) -> np.ndarray:
    """COCO RLE -> (H, W) bool; refuses a size other than ``shape`` or a malformed counts string."""
    if list(size) != list(shape):
        raise InvalidArgument(f"{field}.size", f"mask size {list(size)} differs from the image's {list(shape)}")
    try:
        runs = runs_from_counts(counts, max_runs=shape[0] * shape[1] + 1)
    except (ValueError, UnicodeEncodeError) as exc:
        raise InvalidArgument(f"{field}.counts", f"not a COCO compressed RLE string: {exc}") from None
    height, width = shape
    if runs.size and int(runs.max()) > height * width:  # also keeps the sum below from overflowing
        raise InvalidArgument(f"{field}.counts", f"a run of {int(runs.max())} pixels, the mask has {height * width}")
    if int(runs.sum()) != height * width:
        raise InvalidArgument(
            f"{field}.counts", f"the runs cover {int(runs.sum())} pixels, the mask has {height * width}"
        )
    values = np.arange(len(runs)) % 2 == 1  # runs alternate, starting with zeros
    flat = np.repeat(values, runs)
    return flat.reshape(width, height).T  # column-major, as COCO counts


def iou(pred: np.ndarray, gt: np.ndarray, ignore: np.ndarray | None = None) -> float:
    """Intersection over union of two boolean masks, leaving out ``ignore`` pixels.

    Two empty masks have IoU 1.0 (nothing to segment, nothing segmented).
    """
    pred = np.asarray(pred, dtype=bool)
    gt = np.asarray(gt, dtype=bool)
    valid = np.ones_like(gt) if ignore is None else ~np.asarray(ignore, dtype=bool)
    union = np.count_nonzero((pred | gt) & valid)
    if union == 0:
        return 1.0
    return float(np.count_nonzero(pred & gt & valid) / union)


def resize_mask(mask: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour resize of a boolean mask to ``shape`` (H, W)."""
    if mask.shape == tuple(shape):
        return mask
    return cv2.resize(mask.astype(np.uint8), (shape[1], shape[0]), interpolation=cv2.INTER_NEAREST) > 0
