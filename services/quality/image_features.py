"""What an ImageNet encoder sees of the image and the final mask: does the mask's boundary separate what
the encoder tells apart?

The frozen EfficientNet-Lite0 of the pinned wheel (the click network's encoder before click training, so
it knows images, not this project's masks) reads a crop around the mask. At strides 4, 8 and 16 the mask is
split into its core, a band just inside its boundary, a band just outside and the far surroundings; each
band's cells are compared with the core's and the surroundings' mean features. A mask that leaks into the
background has inner-band cells that look like the surroundings; one that misses part of the object has
outer-band cells that look like the core. Every feature is a fraction or a cosine distance, in [0, 1].
"""

from __future__ import annotations

import functools

import numpy as np
import torch
import torch.nn.functional as F

from services.models.effnet_click_net import FEATURE_BLOCKS, pretrained_classifier

SCALES = ((0, "s4"), (1, "s8"), (2, "s16"))  # index into FEATURE_BLOCKS, name
PER_SCALE = ("leak", "miss", "band_contrast", "core_contrast")
FEATURES = tuple(f"{name}_{f}" for _, name in SCALES for f in PER_SCALE)
CROP = 256  # the crop's side in pixels (the encoder's input)
CONTEXT = 0.5  # the crop adds this share of the mask's box on each side
MEAN = np.asarray([0.485, 0.456, 0.406], np.float32) * 255
STD = np.asarray([0.229, 0.224, 0.225], np.float32) * 255


@functools.cache
def _encoder() -> torch.nn.Module:
    return pretrained_classifier()


def _crop_box(mask: np.ndarray) -> tuple[int, int, int, int]:
    ys, xs = np.nonzero(mask)
    h, w = mask.shape
    y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    side = max(y1 - y0, x1 - x0, 16) * (1 + 2 * CONTEXT)  # square, so only a border-clipped crop is stretched
    cy, cx = (y0 + y1) / 2, (x0 + x1) / 2
    top, left = int(round(cy - side / 2)), int(round(cx - side / 2))
    return max(top, 0), min(top + int(side), h), max(left, 0), min(left + int(side), w)


@torch.no_grad()
def _feature_maps(image: np.ndarray) -> list[torch.Tensor]:
    x = torch.from_numpy(((image.astype(np.float32) - MEAN) / STD).transpose(2, 0, 1)[None].copy())
    net = _encoder()
    x = F.relu6(net._bn0(net._conv_stem(x)))
    wanted = [FEATURE_BLOCKS[index] for index, _ in SCALES]
    maps = []
    for i, block in enumerate(net._blocks[: max(wanted) + 1]):
        x = block(x)
        if i in wanted:
            maps.append(x[0])
    return maps


def _cos(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Cosine similarity of each column of ``a`` (C, N) with the vector ``b`` (C,)."""
    return F.cosine_similarity(a, b[:, None], dim=0)


def _scale_features(maps: torch.Tensor, mask: np.ndarray) -> list[float]:
    c, h, w = maps.shape
    frac = F.adaptive_avg_pool2d(torch.from_numpy(mask.astype(np.float32))[None, None], (h, w))[0, 0]
    inside = frac >= 0.5
    # one cell of erosion/dilation on the grid: the bands
    grown = F.max_pool2d(inside[None, None].float(), 3, 1, 1)[0, 0] > 0
    shrunk = -F.max_pool2d(-inside[None, None].float(), 3, 1, 1)[0, 0] > 0
    regions = {"core": shrunk, "inner": inside & ~shrunk, "outer": grown & ~inside, "far": ~grown}
    if any(not bool(r.any()) for r in regions.values()):
        return [0.0] * len(PER_SCALE)  # a mask too small or too large for this grid: no evidence either way
    flat = maps.reshape(c, -1)
    cells = {k: flat[:, r.reshape(-1)] for k, r in regions.items()}
    core, far = cells["core"].mean(1), cells["far"].mean(1)
    leak = (_cos(cells["inner"], far) > _cos(cells["inner"], core)).float().mean()
    miss = (_cos(cells["outer"], core) > _cos(cells["outer"], far)).float().mean()
    band = 1 - F.cosine_similarity(cells["inner"].mean(1), cells["outer"].mean(1), dim=0)
    contrast = 1 - F.cosine_similarity(core, far, dim=0)
    return [float(leak), float(miss), float(band.clamp(0, 1)), float(contrast.clamp(0, 1))]


def extract(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """(len(FEATURES),) float32 for an RGB uint8 image (H, W, 3) and its boolean mask (H, W)."""
    if image.shape[:2] != mask.shape:
        raise ValueError(f"image {image.shape[:2]} and mask {mask.shape} differ in size")
    if not mask.any():
        return np.zeros(len(FEATURES), np.float32)
    top, bottom, left, right = _crop_box(mask)
    crop = torch.from_numpy(image[top:bottom, left:right].astype(np.float32)).permute(2, 0, 1)[None]
    crop = F.interpolate(crop, (CROP, CROP), mode="bilinear", align_corners=False)[0].permute(1, 2, 0).numpy()
    crop_mask = F.interpolate(torch.from_numpy(mask[top:bottom, left:right].astype(np.float32))[None, None],
                              (CROP, CROP), mode="bilinear", align_corners=False)[0, 0].numpy() >= 0.5
    maps = _feature_maps(crop)
    out: list[float] = []
    for scale in maps:
        out += _scale_features(scale, crop_mask)
    return np.asarray(out, np.float32)
