"""Proposals made live from the project's current interactive network: for a candidate without a proposal
of its own, the segmentation service's mask from automatic clicks (no human input), with the features the
acceptance and cost models read, as the simulation measures them (``outcomes.py``).

Two seeds per candidate, as in the simulation: one positive click at the centre of the region (the
image's, or a box region's), and the same with four negative clicks near the region's corners. The
first seed's mask is the proposal shown; the IoU of the two is ``proposal_agreement`` (a proposal that
moves with the seed is less likely to be right). The adapter (server.py) makes the calls; here are the
clicks, the choice of candidates and the features. When the service cannot answer there is no proposal:
never a made-up one.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
from PIL import Image

from services.common.image_files import MAX_IMAGE_BYTES, local_path
from services.common.masks import iou
from services.dialog.features import mask_features
from services.dialog.questions import Candidate

SEEDS = ("centre", "centre_corners")
LIVE_PROPOSALS = 2  # candidates per question given a live proposal (2 model calls each), best scored first
STATS = ("mean_foreground_probability", "mean_confidence", "uncertain_fraction", "click_confidence")


def wanting(candidates: list[Candidate], limit: int = LIVE_PROPOSALS) -> list[Candidate]:
    """The best-scored candidates that lack a proposal and are asked about as one object (not a
    patch or superpixel, which is labelled as a region)."""
    bare = [c for c in candidates if not c.proposals and not c.is_region]
    return sorted(bare, key=lambda c: -c.selection_score)[:limit]


def image_at_hand(uri: str) -> bytes | None:
    """The encoded image at a local URI (``file://`` or a path), or None when it is not readable here."""
    path = local_path(uri)
    try:
        if path is None or not path.is_file() or path.stat().st_size > MAX_IMAGE_BYTES:
            return None
        return path.read_bytes()
    except OSError:
        return None


def image_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from the image header, or None when it is no image."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            return image.size
    except Exception:  # noqa: BLE001 - whatever PIL refuses is no image
        return None


def seed_clicks(seed: str, width: int, height: int,
                box: tuple[float, float, float, float] | None = None) -> list[tuple[float, float, bool]]:
    """Automatic clicks ``(x, y, positive)`` of ``seed`` inside ``box`` (x, y, width, height; default the
    whole image): the centre positive, and for ``centre_corners`` four negatives near the corners."""
    x0, y0, w, h = box if box is not None else (0.0, 0.0, float(width), float(height))
    clip = lambda x, y: (min(max(x, 0.0), width - 1.0), min(max(y, 0.0), height - 1.0))
    clicks = [(*clip(float(int(x0 + w / 2)), float(int(y0 + h / 2))), True)]
    if seed == "centre":
        return clicks
    dx, dy = max(1, int(w) // 20), max(1, int(h) // 20)
    corners = [(x0 + dx, y0 + dy), (x0 + w - 1 - dx, y0 + dy), (x0 + dx, y0 + h - 1 - dy),
               (x0 + w - 1 - dx, y0 + h - 1 - dy)]
    return clicks + [(*clip(float(int(x)), float(int(y))), False) for x, y in corners]


@dataclass
class Live:
    """A live proposal: the first seed's mask (as the service encoded it), its features, and where it
    came from."""

    size: list[int]
    counts: str
    features: dict[str, float]
    source: str


def live_proposal(found: list[tuple[np.ndarray, dict[str, float], list[int], str]], model_version: str,
                  click: tuple[float, float, bool]) -> Live:
    """``found``: per seed (SEEDS order) the decoded mask, the network's statistics, and the RLE size and
    counts of the mask as the service sent it."""
    (mask, stats, size, counts), others = found[0], found[1:]
    features = {name: float(stats[name]) for name in STATS if name in stats}
    features.update(mask_features(mask))
    if others:
        features["proposal_agreement"] = iou(mask, others[0][0])
    source = (f"segmentation {model_version or 'model'}, automatic positive click at "
              f"({click[0]:.0f}, {click[1]:.0f})")
    return Live(list(size), counts, {k: round(float(v), 5) for k, v in features.items()}, source)
