"""Optical flow between consecutive frames (OpenCV DIS or Farneback) and the flow-only baselines.

``Flows`` holds, for each consecutive pair (t, t+1), the backward flow of t+1 (where each pixel of t+1
came from in t) and the forward flow of t, plus forward-backward consistency masks (occlusions and
flow failures are left out of the temporal loss). Warping pulls a map of one frame into the
coordinates of its neighbour with ``cv2.remap``.

Baselines (no learning): ``propagate_nearest`` carries each annotated mask along the flow chain to the
frames nearer to it than to any other annotated frame; ``propagate_interpolate`` blends the forward and
backward chains linearly by temporal distance (annotating every k-th frame and interpolating).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

CONSISTENCY_PX = 1.5  # forward-backward disagreement above this (working pixels) marks an occlusion


def _gray(frame: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY)


def _flow_fn(method: str):
    if method == "dis":
        dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)
        return lambda a, b: dis.calc(a, b, None)
    if method == "farneback":
        return lambda a, b: cv2.calcOpticalFlowFarneback(a, b, None, 0.5, 3, 15, 3, 5, 1.2, 0)
    raise ValueError(f"unknown optical flow {method!r}; one of dis, farneback")


def _grid(height: int, width: int) -> np.ndarray:
    ys, xs = np.mgrid[:height, :width].astype(np.float32)
    return np.stack([xs, ys], axis=-1)


def warp(values: np.ndarray, flow: np.ndarray) -> np.ndarray:
    """``values`` (H, W) sampled at ``pixel + flow`` (bilinear, border replicated)."""
    maps = _grid(*values.shape[:2]) + flow
    return cv2.remap(values.astype(np.float32), maps[..., 0], maps[..., 1], cv2.INTER_LINEAR,
                     borderMode=cv2.BORDER_REPLICATE)


@dataclass
class Flows:
    backward: np.ndarray  # [T-1, H, W, 2]: frame t+1 -> t (pull a map of t into t+1)
    forward: np.ndarray  # [T-1, H, W, 2]: frame t -> t+1 (pull a map of t+1 into t)
    valid_next: np.ndarray  # [T-1, H, W] bool: pixel of t+1 has a consistent match in t

    def to_next(self, values: np.ndarray, t: int) -> np.ndarray:
        """A map of frame t in the coordinates of frame t+1."""
        return warp(values, self.backward[t])

    def to_prev(self, values: np.ndarray, t: int) -> np.ndarray:
        """A map of frame t+1 in the coordinates of frame t."""
        return warp(values, self.forward[t])


def compute_flows(frames: np.ndarray, method: str = "dis") -> Flows:
    flow = _flow_fn(method)
    gray = [_gray(f) for f in frames]
    height, width = gray[0].shape
    count = max(0, len(gray) - 1)
    backward = np.zeros((count, height, width, 2), np.float32)
    forward = np.zeros_like(backward)
    valid = np.zeros((count, height, width), bool)
    for t in range(count):
        forward[t] = flow(gray[t], gray[t + 1])
        backward[t] = flow(gray[t + 1], gray[t])
        # Round trip t+1 -> t -> t+1 should land where it started.
        there = np.stack([warp(forward[t][..., i], backward[t]) for i in range(2)], axis=-1)
        valid[t] = np.linalg.norm(backward[t] + there, axis=-1) < CONSISTENCY_PX
    return Flows(backward, forward, valid)


def _chains(masks: dict[int, np.ndarray], flows: Flows, length: int):
    """Forward and backward chains: (estimate, distance to its source frame) per frame, or None."""
    fwd: list = [None] * length
    bwd: list = [None] * length
    for t in range(length):
        if t in masks:
            fwd[t] = (masks[t].astype(np.float32), 0)
        elif t > 0 and fwd[t - 1] is not None:
            fwd[t] = (flows.to_next(fwd[t - 1][0], t - 1), fwd[t - 1][1] + 1)
    for t in reversed(range(length)):
        if t in masks:
            bwd[t] = (masks[t].astype(np.float32), 0)
        elif t < length - 1 and bwd[t + 1] is not None:
            bwd[t] = (flows.to_prev(bwd[t + 1][0], t), bwd[t + 1][1] + 1)
    return fwd, bwd


def _check(masks: dict[int, np.ndarray], length: int) -> None:
    if not masks:
        raise ValueError("at least one annotated frame is needed to propagate")
    if any(not 0 <= t < length for t in masks):
        raise ValueError(f"annotated frame index outside 0..{length - 1}")


def propagate_nearest(masks: dict[int, np.ndarray], flows: Flows, length: int) -> np.ndarray:
    """[T, H, W] probability: each frame takes the chain from its nearest annotated frame."""
    _check(masks, length)
    fwd, bwd = _chains(masks, flows, length)
    return np.stack([f[0] if b is None or (f is not None and f[1] <= b[1]) else b[0]
                     for f, b in zip(fwd, bwd)])


def propagate_interpolate(masks: dict[int, np.ndarray], flows: Flows, length: int) -> np.ndarray:
    """[T, H, W] probability: linear blend of the two chains by temporal distance."""
    _check(masks, length)
    fwd, bwd = _chains(masks, flows, length)
    out = []
    for f, b in zip(fwd, bwd):
        if f is None or b is None:
            out.append((f or b)[0])
        else:
            total = f[1] + b[1]
            out.append(f[0] if total == 0 else (b[1] * f[0] + f[1] * b[0]) / total)
    return np.stack(out)
