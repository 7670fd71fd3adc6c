"""A finished annotation session as the quality model reads it, checked.

The shape the quality model reads (and the store keeps), made from the loop's event of a submitted session
(``AnnotationSubmitted`` on ``quality.annotation_submitted``, ``sessions.summary_of``)::

    {"session": {"session_id", "project_id", "width", "height", "annotator_id", "task_id", ...},
     "clicks": [{"x", "y", "positive", "t_ms", "index"}, ...],
     "steps": [{"stats": {"area_px", "click_confidence", "mean_confidence", "uncertain_fraction", ...},
                "iou_with_previous", "model_latency_ms"}, ...],
     "mask": {"size": [H, W], "counts": "<COCO RLE>"}}

Inline sequences of the gRPC API are converted to the same shape (``from_steps``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from services.common.errors import InvalidArgument
from services.common.masks import decode_rle, encode_rle, iou

MAX_CLICKS = 1000


def _number(value, field: str) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise InvalidArgument(field, f"{value!r} is not a number") from None
    if not math.isfinite(number):
        raise InvalidArgument(field, f"{value!r} is not finite")
    return number


def validate(summary: dict, prefix: str = "") -> np.ndarray:
    """Checks ``summary`` in place (fields named under ``prefix``); returns the final mask (H, W) bool.

    Refuses: no clicks, clicks out of order (index not 0, 1, ... or t_ms decreasing), clicks outside
    the image, a step count other than the click count, a mask of another size.
    """
    if not isinstance(summary, dict):
        raise InvalidArgument(prefix or "session", "not a session summary object")
    session = summary.get("session") or {}
    width, height = session.get("width"), session.get("height")
    if not isinstance(width, int) or not isinstance(height, int) or width < 1 or height < 1:
        raise InvalidArgument(f"{prefix}image", f"width and height are required (got {width}x{height})")
    clicks, steps = summary.get("clicks") or [], summary.get("steps") or []
    if not clicks:
        raise InvalidArgument(f"{prefix}steps", "the session has no clicks: nothing to score")
    if len(clicks) > MAX_CLICKS:
        raise InvalidArgument(f"{prefix}steps", f"{len(clicks)} clicks is over the limit of {MAX_CLICKS}")
    if len(steps) != len(clicks):
        raise InvalidArgument(f"{prefix}steps", f"{len(steps)} steps for {len(clicks)} clicks")
    previous_t = 0.0
    for i, click in enumerate(clicks):
        name = f"{prefix}steps[{i}].click"
        x, y = _number(click.get("x"), f"{name}.x"), _number(click.get("y"), f"{name}.y")
        t = _number(click.get("t_ms", 0), f"{name}.t_ms")
        if not 0 <= x < width:
            raise InvalidArgument(f"{name}.x", f"x={x} is outside the image columns [0, {width})")
        if not 0 <= y < height:
            raise InvalidArgument(f"{name}.y", f"y={y} is outside the image rows [0, {height})")
        if int(click.get("index", i)) != i:
            raise InvalidArgument(f"{name}.index", f"click {i} has index {click.get('index')}: clicks out of order")
        if t < previous_t:
            raise InvalidArgument(f"{name}.t_ms", f"t_ms={t:.0f} is before the previous click's "
                                  f"{previous_t:.0f}: events out of order")
        previous_t = t
    for i, step in enumerate(steps):
        stats = step.get("stats") or {}
        for key in ("area_px", "click_confidence", "mean_confidence", "uncertain_fraction"):
            _number(stats.get(key, 0.0), f"{prefix}steps[{i}].stats.{key}")
        _number(step.get("iou_with_previous", 0.0), f"{prefix}steps[{i}].iou_with_previous")
    mask = summary.get("mask") or {}
    if not mask.get("size"):
        raise InvalidArgument(f"{prefix}mask", "the final mask is required")
    return decode_rle(mask["size"], str(mask.get("counts", "")), (height, width), f"{prefix}mask")


def from_steps(width: int, height: int, clicks: Sequence[dict], masks: Sequence[np.ndarray],
               click_confidence: Sequence[float], mean_confidence: Sequence[float],
               uncertain_fraction: Sequence[float], session: dict | None = None) -> dict:
    """An inline sequence (the mask after each click, the model's figures when known) -> a summary."""
    steps, before = [], np.zeros((height, width), bool)
    for i, mask in enumerate(masks):
        steps.append({"stats": {"area_px": int(mask.sum()), "click_confidence": float(click_confidence[i]),
                                "mean_confidence": float(mean_confidence[i]),
                                "uncertain_fraction": float(uncertain_fraction[i])},
                      "iou_with_previous": iou(mask, before), "model_latency_ms": 0.0})
        before = mask
    size, counts = encode_rle(masks[-1] if len(masks) else before)
    return {"session": {"width": width, "height": height, **(session or {})}, "clicks": list(clicks),
            "steps": steps, "mask": {"size": size, "counts": counts}}
