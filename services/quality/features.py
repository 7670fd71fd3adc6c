"""Features of a finished session for the quality model: one vector per click, one for the session.

Model-agnostic: they read the clicks, their timing, the mask statistics the segmentation service
reports after each click and the final mask, never the network itself. Every feature is in a unit
a reviewer can read (seconds, fractions, pixels of the image diagonal); ``DESCRIPTIONS`` says what a
high or low value means for the mask.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage

STEP_FEATURES = (
    "log_dt",  # log(1 + seconds since the previous click)
    "x", "y",  # click position / image size
    "sign",  # +1 positive, -1 negative
    "jump",  # distance to the previous click / image diagonal
    "boundary_distance",  # signed distance to the final mask's boundary / sqrt(final area), + inside
    "agrees_with_mask",  # 1 when the final mask keeps the click's label at the click, else 0
    "area",  # sqrt(mask area / image area) after the click
    "area_change",  # relative change of the mask area made by the click
    "iou_with_previous",  # IoU of the masks before and after the click
    "click_confidence",  # model confidence around the click, rescaled from [0.5, 1] to [0, 1]
    "mean_confidence",  # model confidence over the image, rescaled to [0, 1]
    "uncertain_ratio",  # log(1 + uncertain pixels / mask pixels)
    "position",  # click index / 10
)
SESSION_FEATURES = (
    "image_size",  # log(pixels) - 12
    "object_size",  # sqrt(final area / image area)
    "total_time",  # log(1 + seconds to the last click)
    "click_count",  # clicks / 10
    "components",  # log(1 + connected components of the final mask)
    "compactness",  # 4 pi area / perimeter^2 of the final mask
    "negative_fraction",  # share of negative clicks
    "disagreeing_clicks",  # share of clicks whose label the final mask contradicts
    "last_iou_change",  # 1 - IoU between the last two masks (0 for a single click)
    "final_confidence",  # the model's mean confidence after the last click, rescaled to [0, 1]
)

DESCRIPTIONS = {  # feature -> (when it makes a bad mask more likely, when less)
    "log_dt": ("long hesitation between clicks", "quick, confident clicks"),
    "x": ("click position", "click position"), "y": ("click position", "click position"),
    "sign": ("sign of the clicks", "sign of the clicks"),
    "jump": ("clicks jumped across the image", "clicks stayed local"),
    "boundary_distance": ("clicks relative to the mask boundary", "clicks relative to the mask boundary"),
    "agrees_with_mask": ("clicks the final mask does not follow", "the final mask follows the clicks"),
    "area": ("mask area during the session", "mask area during the session"),
    "area_change": ("the mask area kept changing", "the mask area settled"),
    "iou_with_previous": ("the mask still moved at the clicks", "the mask had settled"),
    "click_confidence": ("the model was unsure around the clicks", "the model was sure around the clicks"),
    "mean_confidence": ("the model was unsure about the image", "the model was sure about the image"),
    "uncertain_ratio": ("a wide uncertain band around the object", "a sharp object boundary"),
    "position": ("many clicks", "few clicks"),
    "image_size": ("image size", "image size"),
    "object_size": ("object size (small objects are hard)", "object size"),
    "total_time": ("long session", "short session"),
    "click_count": ("many clicks were needed", "few clicks were needed"),
    "components": ("the mask is in several pieces", "the mask is one piece"),
    "compactness": ("irregular mask outline", "regular mask outline"),
    "negative_fraction": ("many negative clicks", "few negative clicks"),
    "disagreeing_clicks": ("clicks the final mask contradicts", "the final mask agrees with every click"),
    "last_iou_change": ("the mask still moved a lot at the last click", "the mask barely moved at the end"),
    "final_confidence": ("the model was unsure at the end", "the model was sure at the end"),
}


def _conf(value: float) -> float:
    return float(np.clip((value - 0.5) * 2.0, 0.0, 1.0)) if value > 0 else 0.0


def _boundary_distance(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distance (pixels) to the nearest pixel of the other label: inside and outside the mask."""
    inside = ndimage.distance_transform_edt(mask) if mask.any() else np.zeros(mask.shape)
    outside = ndimage.distance_transform_edt(~mask) if (~mask).any() else np.zeros(mask.shape)
    return inside, outside


def extract(summary: dict, final_mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(steps (T, len(STEP_FEATURES)), session (len(SESSION_FEATURES),)) float32 of a validated summary."""
    meta, clicks, steps = summary["session"], summary["clicks"], summary["steps"]
    width, height = meta["width"], meta["height"]
    pixels, diagonal = float(width * height), math.hypot(width, height)
    final_area = float(final_mask.sum())
    inside, outside = _boundary_distance(final_mask)
    scale = math.sqrt(max(final_area, 1.0))
    rows, previous_t, previous_xy, previous_area = [], 0.0, None, 0.0
    disagree = 0
    for i, (click, step) in enumerate(zip(clicks, steps)):
        stats = step.get("stats", {})
        x, y, t = float(click["x"]), float(click["y"]), float(click.get("t_ms", 0))
        px, py = min(int(x), width - 1), min(int(y), height - 1)
        sign = 1.0 if click["positive"] else -1.0
        in_mask = bool(final_mask[py, px])
        agrees = in_mask == bool(click["positive"])
        disagree += not agrees
        signed = inside[py, px] if in_mask else -outside[py, px]
        area = float(stats.get("area_px", 0.0))
        rows.append([
            math.log1p(max(t - previous_t, 0.0) / 1000.0), x / width, y / height, sign,
            0.0 if previous_xy is None else math.hypot(x - previous_xy[0], y - previous_xy[1]) / diagonal,
            float(np.clip(signed / scale, -3.0, 3.0)), float(agrees), math.sqrt(area / pixels),
            (area - previous_area) / max(area, previous_area, 1.0), float(step.get("iou_with_previous", 0.0)),
            _conf(float(stats.get("click_confidence", 0.0))), _conf(float(stats.get("mean_confidence", 0.0))),
            math.log1p(float(stats.get("uncertain_fraction", 0.0)) * pixels / max(area, 1.0)), i / 10.0,
        ])
        previous_t, previous_xy, previous_area = t, (x, y), area
    n = len(clicks)
    _, components = ndimage.label(final_mask)
    perimeter = float((final_mask & ~ndimage.binary_erosion(final_mask)).sum())
    last = steps[-1]
    session = [
        math.log(pixels) - 12.0, math.sqrt(final_area / pixels), math.log1p(previous_t / 1000.0), n / 10.0,
        math.log1p(components), min(4 * math.pi * final_area / max(perimeter, 1.0) ** 2, 2.0) if final_area else 0.0,
        sum(not c["positive"] for c in clicks) / n, disagree / n,
        1.0 - float(last.get("iou_with_previous", 0.0)) if n > 1 else 0.0,  # one click: nothing corrected
        _conf(float(last.get("stats", {}).get("mean_confidence", 0.0))),
    ]
    return np.asarray(rows, np.float32), np.asarray(session, np.float32)
