"""The standard automatic clicker of interactive segmentation (RITM / f-BRS protocol).

At each step the clicker takes the distance transform (1-pixel zero padding) of the false-negative and
the false-positive regions and clicks at the maximum-distance point of whichever has the larger maximum:
a positive click in a missed object part, a negative click in a wrongly included part. Ground-truth
pixels equal to ``IGNORE`` (128, ``services.common.clicks``) are excluded from IoU and never clicked; values above 128 are object.
"""

from __future__ import annotations

import cv2
import numpy as np

from services.common.clicks import Click, split_annotation


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
