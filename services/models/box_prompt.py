"""A box as the first input of an object, for a click network: the box encoding of Inside-Outside Guidance
(IOG, Zhang et al. 2020) and the zoom-in of RITM / FocalClick, built from what a click network already takes.

- **Zoom-in to the box.** The network sees a square window around the box with a margin (``MARGIN`` of its
  long side, as ``click_encoding.zoom_crop`` expands the object estimate), cut from the image, so its own
  first-step zoom (the whole input) is the box's neighbourhood at the network's resolution.
- **Inside guidance**: a positive click at the box's interior centre.
- **Outside guidance**: negative clicks just outside the box's four corners (IOG's corner points), and the
  region outside the box is background: the probability there is 0.

Later clicks correct the mask as usual; the box's clicks stay in front of them (the network keeps seeing the
guidance) and outside the box stays background until a positive click lands outside it (the person has said
the box was too tight).

Numpy only; ``Predictor`` (either interface, encoded or pipeline) runs the network.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from services.common.clicks import Click

MARGIN = 0.4  # the window's side is the box's long side times (1 + MARGIN), as zoom_crop's expand 1.4
CORNER_GAP = 2  # px outside the box for the corner (outside) clicks


@dataclass(frozen=True)
class Box:
    """An axis-aligned box in image pixels: [x0, x1) x [y0, y1)."""

    x0: float
    y0: float
    x1: float
    y1: float

    @property
    def width(self) -> float:
        return self.x1 - self.x0

    @property
    def height(self) -> float:
        return self.y1 - self.y0

    def as_xywh(self) -> list[float]:
        return [self.x0, self.y0, self.width, self.height]

    @classmethod
    def from_xywh(cls, xywh: Sequence[float]) -> Box:
        x, y, w, h = (float(v) for v in xywh)
        return cls(x, y, x + w, y + h)

    def pixels(self, shape: tuple[int, int]) -> tuple[int, int, int, int]:
        """(c0, r0, c1, r1): the pixel columns and rows the box covers, at least one of each."""
        height, width = shape
        c0, r0 = min(math.floor(self.x0), width - 1), min(math.floor(self.y0), height - 1)
        c1, r1 = max(c0 + 1, min(math.ceil(self.x1), width)), max(r0 + 1, min(math.ceil(self.y1), height))
        return c0, r0, c1, r1

    def contains(self, click: Click) -> bool:
        return self.x0 <= click.x < self.x1 and self.y0 <= click.y < self.y1


def check_box(x: float, y: float, width: float, height: float, image_width: int, image_height: int,
              field: str = "box") -> Box:
    """A box (left, top, width, height) in image pixels, inside the image and at least one pixel each way.
    Raises ``ValueError(field, message)`` naming the offending field."""
    for name, value in (("x", x), ("y", y), ("width", width), ("height", height)):
        if not math.isfinite(value):
            raise ValueError(f"{field}.{name}", f"{name}={value} is not a number")
    if width < 1:
        raise ValueError(f"{field}.width", f"width={width}: the box is empty or inverted (at least 1 pixel)")
    if height < 1:
        raise ValueError(f"{field}.height", f"height={height}: the box is empty or inverted (at least 1 pixel)")
    if not 0 <= x or x + width > image_width:
        raise ValueError(f"{field}.x", f"columns [{x}, {x + width}) reach outside the image [0, {image_width})")
    if not 0 <= y or y + height > image_height:
        raise ValueError(f"{field}.y", f"rows [{y}, {y + height}) reach outside the image [0, {image_height})")
    return Box(float(x), float(y), float(x + width), float(y + height))


def centre_click(box: Box, shape: tuple[int, int]) -> Click:
    """The inside guidance: a positive click at the box's centre pixel."""
    c0, r0, c1, r1 = box.pixels(shape)
    return Click((c0 + c1 - 1) // 2, (r0 + r1 - 1) // 2, True)


def guidance_clicks(box: Box, shape: tuple[int, int]) -> list[Click]:
    """The box as clicks: the positive centre first, then negatives just outside the corners that lie in the
    image (a box along the image border has no outside there)."""
    height, width = shape
    c0, r0, c1, r1 = box.pixels(shape)
    clicks = [centre_click(box, shape)]
    for x, y in ((c0 - CORNER_GAP, r0 - CORNER_GAP), (c1 - 1 + CORNER_GAP, r0 - CORNER_GAP),
                 (c0 - CORNER_GAP, r1 - 1 + CORNER_GAP), (c1 - 1 + CORNER_GAP, r1 - 1 + CORNER_GAP)):
        if 0 <= x < width and 0 <= y < height:
            clicks.append(Click(x, y, False))
    return clicks


def window(box: Box, shape: tuple[int, int], margin: float = MARGIN) -> tuple[int, int, int, int]:
    """(c0, r0, c1, r1): the zoom-in window, a square of the box's long side times (1 + margin) around its
    centre, moved inside the image where it fits and clipped where it does not."""
    height, width = shape
    side = max(box.width, box.height) * (1 + margin)
    cx, cy = (box.x0 + box.x1) / 2, (box.y0 + box.y1) / 2
    c0 = round(min(max(cx - side / 2, 0), max(width - side, 0)))
    r0 = round(min(max(cy - side / 2, 0), max(height - side, 0)))
    c1, r1 = min(width, round(c0 + side)), min(height, round(r0 + side))
    bc0, br0, bc1, br1 = box.pixels(shape)
    return min(c0, bc0), min(r0, br0), max(c1, bc1), max(r1, br1)


def limit(prob: np.ndarray, box: Box, clicks: Sequence[Click]) -> np.ndarray:
    """Outside the box is background (probability 0), unless a positive click lies outside it."""
    if any(c.positive and not box.contains(c) for c in clicks):
        return prob
    c0, r0, c1, r1 = box.pixels(prob.shape)
    out = np.zeros_like(prob)
    out[r0:r1, c0:c1] = prob[r0:r1, c0:c1]
    return out


def predict(predictor, image: np.ndarray, box: Box, timings: dict | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The first step of an object from its box: (probability, the network's own probability), image size.

    The predictor runs on the zoom-in window with the box's guidance clicks moved into it; its maps are pasted
    back and limited to the box."""
    shape = image.shape[:2]
    c0, r0, c1, r1 = window(box, shape)
    sub = np.ascontiguousarray(image[r0:r1, c0:c1])
    clicks = [Click(c.x - c0, c.y - r0, c.positive) for c in guidance_clicks(box, shape)]
    clicks = [c for c in clicks if 0 <= c.x < c1 - c0 and 0 <= c.y < r1 - r0]
    prob_w, network_w = predictor.predict_with_network(sub, clicks, None, timings)
    maps = []
    for part in (prob_w, network_w):
        full = np.zeros(shape, np.float32)
        full[r0:r1, c0:c1] = part
        maps.append(limit(full, box, ()))
    return maps[0], maps[1]
