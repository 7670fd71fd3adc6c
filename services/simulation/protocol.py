"""NoC evaluation as a function over a small protocol: "predict a mask from these clicks".

Any segmenter (the network through Triton, a classic baseline, a local checkpoint) is a
``Segmenter``: a callable ``(clicks, previous_probability) -> probability map`` for one image.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from services.common.clicks import THRESHOLD, Segmenter
from services.common.masks import iou
from services.simulation.clicker import Clicker


def iou_curve(
    segment: Segmenter,
    annotation: np.ndarray,
    max_clicks: int = 20,
    stop_at: float | None = None,
) -> list[float]:
    """IoU after each of up to ``max_clicks`` clicks of the standard clicker.

    With ``stop_at`` the run ends once IoU reaches it, and the last IoU is carried forward (a faster
    curve that gives the same NoC at that threshold and below).
    """
    clicker = Clicker(annotation)
    prob: np.ndarray | None = None
    curve: list[float] = []
    for _ in range(max_clicks):
        pred = None if prob is None else prob > THRESHOLD
        if clicker.next_click(pred) is None:  # nothing left to correct
            curve.append(curve[-1] if curve else 1.0)
            continue
        prob = segment(list(clicker.clicks), prob)
        curve.append(iou(prob > THRESHOLD, clicker.gt, clicker.ignore))
        if stop_at is not None and curve[-1] >= stop_at:
            break
    return curve + [curve[-1]] * (max_clicks - len(curve))


def noc(curve: Sequence[float], target: float, max_clicks: int = 20) -> int:
    """Number of clicks to reach ``target`` IoU; ``max_clicks`` when never reached (RITM)."""
    reached = np.asarray(curve[:max_clicks]) >= target
    return int(np.argmax(reached)) + 1 if reached.any() else max_clicks


def summarize(curves: Sequence[Sequence[float]], max_clicks: int = 20) -> dict:
    """mIoU@1..max_clicks, NoC@85, NoC@90 and the number of images never reaching 90%."""
    table = np.asarray([list(c)[:max_clicks] for c in curves], dtype=np.float64)
    noc90 = [noc(c, 0.90, max_clicks) for c in table]
    return {
        "images": len(table),
        "miou_at": [round(float(v), 4) for v in table.mean(axis=0)],
        "noc85": round(float(np.mean([noc(c, 0.85, max_clicks) for c in table])), 3),
        "noc90": round(float(np.mean(noc90)), 3),
        "failed90": int(sum(not (c >= 0.90).any() for c in table)),
    }


def evaluate(
    make_segmenter: Callable[[np.ndarray], Segmenter],
    samples: Sequence,
    max_clicks: int = 20,
    stop_at: float | None = None,
) -> tuple[dict[str, list[float]], dict]:
    """Run the clicker on every sample (``.stem``, ``.image``, ``.annotation``).

    Returns per-stem IoU curves and their ``summarize`` figures.
    """
    curves = {
        s.stem: iou_curve(make_segmenter(s.image), s.annotation, max_clicks, stop_at) for s in samples
    }
    return curves, summarize(list(curves.values()), max_clicks)
