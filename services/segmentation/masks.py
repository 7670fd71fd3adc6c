"""Masks on the wire (COCO RLE via pycocotools) and the statistics of a probability map."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from pycocotools import mask as mask_utils

from services.common.errors import InvalidArgument
from services.segmentation.encoding import RADIUS
from services.simulation.clicker import Click


def encode_rle(mask: np.ndarray) -> tuple[list[int], str]:
    """Binary (H, W) mask -> ([H, W], COCO compressed counts string)."""
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return [int(v) for v in rle["size"]], rle["counts"].decode("ascii")


def runs_from_counts(counts: str) -> np.ndarray:
    """Run lengths of a COCO compressed counts string (pycocotools' ``rleFrString``), checked.

    Parsed here rather than by pycocotools because its decoder trusts the runs and writes past the
    mask on hostile input.
    """
    runs: list[int] = []
    pos, data = 0, counts.encode("ascii")
    while pos < len(data):
        value, shift, more = 0, 0, True
        while more:
            if pos >= len(data):
                raise ValueError("the string ends inside a number")
            c = data[pos] - 48
            if not 0 <= c <= 63:
                raise ValueError(f"character {chr(data[pos])!r} at {pos} is not in the RLE alphabet")
            value |= (c & 0x1F) << (5 * shift)
            more = bool(c & 0x20)
            pos, shift = pos + 1, shift + 1
            if not more and c & 0x10:
                value |= -1 << (5 * shift)
            if shift > 7:
                raise ValueError("a number is too long")
        if len(runs) > 2:
            value += runs[-2]
        if value < 0:
            raise ValueError(f"run {len(runs)} is negative")
        runs.append(value)
    return np.asarray(runs, dtype=np.int64)


def decode_rle(size: Sequence[int], counts: str, shape: tuple[int, int], field: str) -> np.ndarray:
    """COCO RLE -> (H, W) bool; refuses a size other than ``shape`` or a malformed counts string."""
    if list(size) != list(shape):
        raise InvalidArgument(f"{field}.size", f"mask size {list(size)} differs from the image's {list(shape)}")
    try:
        runs = runs_from_counts(counts)
    except (ValueError, UnicodeEncodeError) as exc:
        raise InvalidArgument(f"{field}.counts", f"not a COCO compressed RLE string: {exc}") from None
    height, width = shape
    if int(runs.sum()) != height * width:
        raise InvalidArgument(
            f"{field}.counts", f"the runs cover {int(runs.sum())} pixels, the mask has {height * width}"
        )
    values = np.arange(len(runs)) % 2 == 1  # runs alternate, starting with zeros
    flat = np.repeat(values, runs)
    return flat.reshape(width, height).T  # column-major, as COCO counts


def iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return 1.0 if union == 0 else float(np.logical_and(a, b).sum() / union)


def probability_stats(prob: np.ndarray, threshold: float, last_click: Click | None) -> dict:
    """The ProbabilityStats of the proto, from a (H, W) probability map."""
    mask = prob > threshold
    confidence = np.maximum(prob, 1 - prob)
    click_confidence = 0.0
    if last_click is not None:
        height, width = prob.shape
        ys, xs = np.ogrid[:height, :width]
        disk = (ys - last_click.y) ** 2 + (xs - last_click.x) ** 2 <= RADIUS**2
        click_confidence = float(confidence[disk].mean()) if disk.any() else 0.0
    return {
        "mean_foreground_probability": float(prob[mask].mean()) if mask.any() else 0.0,
        "mean_confidence": float(confidence.mean()),
        "uncertain_fraction": float(((prob >= 0.25) & (prob <= 0.75)).mean()),
        "click_confidence": click_confidence,
        "area_px": int(mask.sum()),
        "threshold": float(threshold),
    }
