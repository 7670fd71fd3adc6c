"""The standard automatic clicker of interactive segmentation (RITM / f-BRS protocol) and NoC evaluation.

At each step the clicker takes the distance transform (1-pixel zero padding) of the false-negative and
the false-positive regions and clicks at the maximum-distance point of whichever has the larger maximum:
a positive click in a missed object part, a negative click in a wrongly included part. Ground-truth
pixels equal to ``IGNORE`` (128, ``services.common.clicks``) are excluded from IoU and never clicked; values above 128 are object.

NoC evaluation is a function over a small protocol: "predict a mask from these clicks". Any segmenter (the
network through Triton, a classic baseline, a local checkpoint) is a ``Segmenter``: a callable
``(clicks, previous_probability) -> probability map`` for one image.

Pure logic on the ground floor (``models``): the simulated annotator, the training loops and the training
wing's promotion gate (a deployed worker) all click the same way.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import cv2
import numpy as np

from services.common.clicks import THRESHOLD, Click, Segmenter, split_annotation
from services.common.masks import iou


def _padded_distance(region: np.ndarray) -> np.ndarray:
    padded = np.pad(region.astype(np.uint8), 1, mode="constant")
    return cv2.distanceTransform(padded, cv2.DIST_L2, cv2.DIST_MASK_PRECISE)[1:-1, 1:-1]


class Clicker:
    """Clicks where the current prediction is most wrong, for one object annotation.

    ``annotation`` is a 0/128/255 mask (or boolean object mask with an optional ``ignore`` map).
    State (the clicks so far) can be saved and restored for undo.
    """

    def __init__(self, annotation: np.ndarray, ignore: np.ndarray | None = None) -> None:
        annotation = np.asarray(annotation)
        if annotation.dtype == bool:
            self.gt = annotation
            self.ignore = np.zeros_like(annotation) if ignore is None else np.asarray(ignore, bool)
        else:
            self.gt, self.ignore = split_annotation(annotation)
        self.clicks: list[Click] = []
        self._not_clicked = np.ones(self.gt.shape, dtype=np.float32)

    def next_click(self, pred: np.ndarray | None) -> Click | None:
        """Return (and record) the next click for the boolean prediction ``pred``.

        ``None`` means no clickable error is left (the prediction is perfect outside ignore pixels).
        """
        pred = np.zeros_like(self.gt) if pred is None else np.asarray(pred, dtype=bool)
        valid = ~self.ignore
        fn = _padded_distance(self.gt & ~pred & valid) * self._not_clicked
        fp = _padded_distance(~self.gt & pred & valid) * self._not_clicked
        fn_max, fp_max = float(fn.max()), float(fp.max())
        if max(fn_max, fp_max) <= 0.0:
            return None
        positive = fn_max > fp_max
        dist = fn if positive else fp
        ys, xs = np.nonzero(dist == (fn_max if positive else fp_max))
        click = Click(x=int(xs[0]), y=int(ys[0]), positive=positive)
        self.add(click)
        return click

    def add(self, click: Click) -> None:
        self.clicks.append(click)
        self._not_clicked[click.y, click.x] = 0.0

    def get_state(self) -> list[Click]:
        return list(self.clicks)

    def set_state(self, clicks: list[Click]) -> None:
        self.clicks = []
        self._not_clicked[:] = 1.0
        for click in clicks:
            self.add(click)


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
