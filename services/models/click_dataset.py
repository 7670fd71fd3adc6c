"""Image/mask folders and the training crops drawn from them.

A folder holds ``images/`` and ``masks/`` with matching stems; masks are 0 background, 255 object,
128 ignore. Training samples are square crops around the object (sometimes the whole image, the
first-click regime of the zoom-in), randomly scaled, shifted, flipped and colour-jittered.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from services.common.clicks import IGNORE
from services.models.click_encoding import Crop, warp

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp"}


@dataclass
class Sample:
    stem: str
    image: np.ndarray  # (H, W, 3) uint8 RGB
    annotation: np.ndarray  # (H, W) uint8: 0 / 128 / 255


def load_folder(root: str | Path, stems: list[str] | None = None) -> list[Sample]:
    """All image/mask pairs of ``root`` (sorted by stem), or only ``stems``."""
    root = Path(root)
    images = {p.stem: p for p in (root / "images").iterdir() if p.suffix.lower() in IMAGE_SUFFIXES}
    wanted = sorted(images) if stems is None else stems
    samples = []
    for stem in wanted:
        mask_path = root / "masks" / f"{stem}.png"
        if not mask_path.exists():
            continue
        image = np.asarray(Image.open(images[stem]).convert("RGB"))
        annotation = np.asarray(Image.open(mask_path).convert("L"))
        samples.append(Sample(stem, image, annotation))
    return samples


def split_stems(root: str | Path, val_count: int, seed: int = 0) -> tuple[list[str], list[str]]:
    """(train, val) stems; pairs sharing a source image (the ``_<id>`` suffix) stay on one side."""
    stems = sorted(p.stem for p in (Path(root) / "masks").glob("*.png"))
    groups = sorted({s.rsplit("_", 1)[-1] for s in stems})
    rng = np.random.default_rng(seed)
    rng.shuffle(groups)
    val_groups, val = set(), []
    for group in groups:
        if len(val) >= val_count:
            break
        val_groups.add(group)
        val += [s for s in stems if s.rsplit("_", 1)[-1] == group]
    train = [s for s in stems if s.rsplit("_", 1)[-1] not in val_groups]
    return train, sorted(val)


def _jitter_colour(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    out = image.astype(np.float32)
    grey = out.mean(axis=2, keepdims=True)
    out = grey + (out - grey) * rng.uniform(0.6, 1.4)  # saturation
    out = (out - out.mean()) * rng.uniform(0.7, 1.3) + out.mean()  # contrast
    out = out * rng.uniform(0.7, 1.3) + rng.uniform(-15, 15, size=3)  # brightness, colour cast
    return np.clip(out, 0, 255).astype(np.uint8)


def random_crop(
    sample: Sample, size: int, rng: np.random.Generator, whole_image_p: float = 0.25
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(image, object, ignore) for one augmented ``size`` x ``size`` crop; outside the image is ignore."""
    height, width = sample.annotation.shape
    full = float(max(height, width))
    ys, xs = np.nonzero(sample.annotation > IGNORE)
    if rng.random() < whole_image_p or len(ys) == 0:
        side = full * rng.uniform(0.9, 1.15)
        cx, cy = width / 2 + rng.normal(0, 0.05) * full, height / 2 + rng.normal(0, 0.05) * full
    else:
        extent = max(ys.max() - ys.min() + 1, xs.max() - xs.min() + 1)
        side = float(np.clip(extent * rng.uniform(1.15, 2.2), 24, 1.5 * full))
        cx = (xs.min() + xs.max() + 1) / 2 + rng.uniform(-0.12, 0.12) * side
        cy = (ys.min() + ys.max() + 1) / 2 + rng.uniform(-0.12, 0.12) * side
    crop = Crop(cx - side / 2, cy - side / 2, side, size)
    image = warp(sample.image, crop, fill=0)
    annotation = warp(sample.annotation, crop, nearest=True, fill=IGNORE)
    if rng.random() < 0.5:
        image, annotation = image[:, ::-1], annotation[:, ::-1]
    if rng.random() < 0.8:
        image = _jitter_colour(image, rng)
    if rng.random() < 0.2:
        image = cv2.GaussianBlur(np.ascontiguousarray(image), (0, 0), rng.uniform(0.5, 1.2))
    return np.ascontiguousarray(image), annotation > IGNORE, annotation == IGNORE
