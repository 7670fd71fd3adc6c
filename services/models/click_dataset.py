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
    sample: Sample, size: int, rng: np.random.Generator, whole_image_p: float = 0.25, focus_p: float = 0.0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(image, object, ignore) for one augmented ``size`` x ``size`` crop; outside the image is ignore.

    ``focus_p``: the chance of a close-up on a stretch of the object's boundary, what the focus pass
    of the predictor sees (a crop around the region the last click changed, at full resolution).
    """
    height, width = sample.annotation.shape
    full = float(max(height, width))
    ys, xs = np.nonzero(sample.annotation > IGNORE)
    draw = rng.random()
    if draw < whole_image_p or len(ys) == 0:
        side = full * rng.uniform(0.9, 1.15)
        cx, cy = width / 2 + rng.normal(0, 0.05) * full, height / 2 + rng.normal(0, 0.05) * full
    elif draw < whole_image_p + focus_p:
        obj = (sample.annotation > IGNORE).astype(np.uint8)
        by, bx = np.nonzero(obj - cv2.erode(obj, np.ones((3, 3), np.uint8)))
        i = rng.integers(len(by))
        extent = max(ys.max() - ys.min() + 1, xs.max() - xs.min() + 1)
        side = float(np.clip(extent * rng.uniform(0.25, 0.7), 24, full))
        cx, cy = bx[i] + rng.uniform(-0.2, 0.2) * side, by[i] + rng.uniform(-0.2, 0.2) * side
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


def _cut_object(
    sample: Sample, size: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """(image, object) of a crop around ``sample``'s object, unaugmented, for pasting elsewhere."""
    image, obj, _ = random_crop(sample, size, rng, whole_image_p=0.0)
    return image, obj


def _whole_object(obj: np.ndarray, ignore: np.ndarray) -> bool:
    """Whether no crop edge or image edge cuts the object (a cut edge, pasted, would be a fake boundary)."""
    border = np.zeros_like(obj)
    border[[0, -1], :] = border[:, [0, -1]] = True
    near_outside = cv2.dilate(ignore.astype(np.uint8), np.ones((5, 5), np.uint8)) > 0
    return not (obj & (border | near_outside)).any()


def _feathered(mask: np.ndarray) -> np.ndarray:
    """Alpha (H, W, 1) that softens a pasted object's edge over about a pixel, as a camera would."""
    return cv2.GaussianBlur(mask.astype(np.float32), (0, 0), 0.7)[..., None]


def augmented_crop(
    samples: list[Sample], index: int, size: int, rng: np.random.Generator,
    focus_p: float = 0.15, paste_p: float = 0.25, occlude_p: float = 0.15,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``random_crop`` of ``samples[index]`` plus copy-paste, which multiplies 800 masks into new scenes.

    With ``paste_p`` the object is cut out and pasted onto a crop of another image (a new background,
    so the network cannot learn the backgrounds by heart); with ``occlude_p`` another sample's object is
    pasted over the crop as a distractor that hides part of the target (its ground truth loses that part).
    """
    paste = len(samples) > 1 and rng.random() < paste_p
    # A close-up cuts the object with straight crop edges: never paste one of those.
    image, obj, ignore = random_crop(samples[index], size, rng, focus_p=0.0 if paste else focus_p)
    if paste and obj.any() and _whole_object(obj, ignore):
        other = samples[(index + 1 + rng.integers(len(samples) - 1)) % len(samples)]
        background, _, _ = random_crop(other, size, rng, whole_image_p=1.0)
        alpha = _feathered(obj)
        image = (alpha * image + (1 - alpha) * background).astype(np.uint8)
        ignore = np.zeros_like(ignore)  # outside the source image is now the new background
    if len(samples) > 1 and rng.random() < occlude_p:
        other = samples[(index + 1 + rng.integers(len(samples) - 1)) % len(samples)]
        patch, patch_obj = _cut_object(other, size, rng)
        scale = rng.uniform(0.3, 0.8)
        side = max(8, int(size * scale))
        patch = cv2.resize(patch, (side, side), interpolation=cv2.INTER_AREA)
        patch_obj = cv2.resize(patch_obj.astype(np.uint8), (side, side), interpolation=cv2.INTER_NEAREST) > 0
        y0, x0 = rng.integers(0, size - side + 1, size=2)
        window = (slice(y0, y0 + side), slice(x0, x0 + side))
        hidden = obj[window] & patch_obj
        # Keep the target mostly visible: a distractor that hides most of it teaches nothing.
        if patch_obj.any() and hidden.sum() <= 0.5 * max(1, obj.sum()):
            alpha = _feathered(patch_obj)
            image = image.copy()
            image[window] = (alpha * patch + (1 - alpha) * image[window]).astype(np.uint8)
            obj, ignore = obj.copy(), ignore.copy()
            obj[window] &= ~patch_obj
            ignore[window] &= ~patch_obj
    return np.ascontiguousarray(image), obj, ignore
