"""Test-time augmentation transforms and their inverses on [C, H, W] maps (flip, scale)."""

from __future__ import annotations

import cv2
import numpy as np

TRANSFORMS = ("hflip", "vflip", "scale")


def resize(maps: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bilinear resize of [C, H, W] to [C, *size] (all channels in one OpenCV call)."""
    if maps.shape[1:] == tuple(size):
        return maps
    channels = np.ascontiguousarray(maps.transpose(1, 2, 0))
    out = cv2.resize(channels, (size[1], size[0]), interpolation=cv2.INTER_LINEAR)
    return out.reshape(size[0], size[1], -1).transpose(2, 0, 1)


def apply(maps: np.ndarray, transform: str, scale: float = 1.0) -> np.ndarray:
    """The transform of an input [C, H, W] (e.g. an image as channels-first floats)."""
    if transform == "hflip":
        return maps[:, :, ::-1]
    if transform == "vflip":
        return maps[:, ::-1, :]
    height, width = maps.shape[1:]
    return resize(maps, (max(1, round(height * scale)), max(1, round(width * scale))))


def invert(prediction: np.ndarray, transform: str, size: tuple[int, int]) -> np.ndarray:
    """Maps a [K, H', W'] prediction made on the transformed input back to the original [K, *size]
    frame; probabilities are renormalised after resampling."""
    if transform == "hflip":
        out = prediction[:, :, ::-1]
    elif transform == "vflip":
        out = prediction[:, ::-1, :]
    else:
        out = resize(prediction, size)
    out = np.ascontiguousarray(out, dtype=np.float32)
    if out.shape[1:] != tuple(size):  # a flip of a map of another size: resample as well
        out = resize(out, size)
    return out / np.maximum(out.sum(axis=0, keepdims=True), 1e-12)
