"""The simulated annotator of a video and its cost model, in clicks.

- **A whole frame** is segmented interactively: the standard clicker (``services.models.clicker``)
  clicks on the errors of the platform's segmentation (a ``make_segmenter``: the simulation passes the
  served default run in process, ``click_pipeline.served_segmenters``) until the frame's IoU reaches
  ``frame_iou`` or ``max_clicks`` clicks; cost = those clicks, label = the mask the annotator ends with
  (not the ground truth). The clicker also records NoC and the mask at every level of ``LEVELS``, which
  the every-frame baseline uses.
- **A rectangle or superpixel** is labelled exactly (ground truth inside it). Cost: 1 click when the
  region holds one class (the annotator clicks its label); when the object boundary crosses it, 2 clicks
  plus one polygon vertex per ``VERTEX_SPACING_PX`` of boundary inside it (in original-frame pixels).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import cv2
import numpy as np

from services.common.clicks import THRESHOLD, Segmenter
from services.common.masks import iou, resize_mask
from services.models.clicker import Clicker

LEVELS = (0.80, 0.85, 0.90, 0.95)
VERTEX_SPACING_PX = 16


@dataclass
class FrameRun:
    """The clicker's run on one frame: clicks to reach each level (``max_clicks`` if never) and masks."""

    noc: dict[float, int]
    masks: dict[float, np.ndarray]
    reached: dict[float, bool]


def click_frame(segment: Segmenter, gt: np.ndarray, max_clicks: int = 20) -> FrameRun:
    clicker = Clicker(gt.astype(bool))
    prob, pred = None, np.zeros(gt.shape, bool)
    noc: dict[float, int] = {}
    masks: dict[float, np.ndarray] = {}
    for n in range(1, max_clicks + 1):
        if clicker.next_click(pred) is None:
            break
        prob = segment(list(clicker.clicks), prob)
        pred = prob > THRESHOLD
        score = iou(pred, clicker.gt)
        for level in LEVELS:
            if level not in noc and score >= level:
                noc[level], masks[level] = n, pred
        if len(noc) == len(LEVELS):
            break
    reached = {level: level in noc for level in LEVELS}
    for level in LEVELS:  # never reached: the annotator stops at max_clicks with what it has
        noc.setdefault(level, max_clicks)
        masks.setdefault(level, pred)
    return FrameRun(noc, masks, reached)


def region_cost(gt: np.ndarray, pixels: np.ndarray, scale: float) -> int:
    """Clicks to label ``pixels`` of a frame whose ground truth is ``gt`` (``scale``: working / original px)."""
    inside = gt[pixels]
    if inside.all() or not inside.any():
        return 1
    edge = cv2.morphologyEx(gt.astype(np.uint8), cv2.MORPH_GRADIENT, np.ones((3, 3), np.uint8)) > 0
    # The gradient band is about two pixels wide; half its area in the region is the boundary length.
    length = np.count_nonzero(edge & pixels) / 2 / scale
    return 2 + math.ceil(length / VERTEX_SPACING_PX)


@dataclass
class Answer:
    frame: int
    pixels: np.ndarray  # bool [H, W]
    mask: np.ndarray  # bool [H, W]
    clicks: int


class VideoAnnotator:
    """Answers samples of one video; frame runs are computed once and cached.

    Frames are clicked at their own resolution (``click_frames``/``click_gt``, a human sees more pixels
    than the fine-tuning uses) and answers are given at the working resolution of ``gt``.
    """

    def __init__(self, click_frames: np.ndarray, click_gt: np.ndarray, gt: np.ndarray, scale: float,
                 make_segmenter: Callable[[np.ndarray], Segmenter], frame_iou: float = 0.90,
                 max_clicks: int = 20) -> None:
        if frame_iou not in LEVELS:
            raise ValueError(f"frame_iou must be one of {LEVELS}")
        self.click_frames, self.click_gt, self.gt, self.scale = click_frames, click_gt, gt, scale
        self.make_segmenter, self.frame_iou, self.max_clicks = make_segmenter, frame_iou, max_clicks
        self.runs: dict[int, FrameRun] = {}

    def run(self, t: int) -> FrameRun:
        if t not in self.runs:
            self.runs[t] = click_frame(self.make_segmenter(self.click_frames[t]), self.click_gt[t], self.max_clicks)
        return self.runs[t]

    def frame(self, t: int) -> Answer:
        run = self.run(t)
        mask = resize_mask(run.masks[self.frame_iou], self.gt[t].shape)
        return Answer(t, np.ones(self.gt[t].shape, bool), mask, run.noc[self.frame_iou])

    def region(self, t: int, pixels: np.ndarray) -> Answer:
        return Answer(t, pixels, self.gt[t] & pixels, region_cost(self.gt[t], pixels, self.scale))
