"""A video as an ordered list of frames (and, for evaluation, its per-frame ground-truth masks).

Layout read here: ``DIR/<sequence>/frames/*.jpg`` and ``DIR/<sequence>/masks/*.png`` (0 background,
255 object), frames and masks matched by file stem and ordered by it. Frames are downscaled to a
working resolution (``short_side`` px) because fine-tuning runs on CPU; every figure derived from
them (IoU, clicks of the simulated annotator) is measured at that resolution.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from services.common.video_layout import FRAME_SUFFIXES


@dataclass
class Video:
    name: str
    frames: np.ndarray  # [T, H, W, 3] uint8 RGB at working resolution
    masks: np.ndarray | None  # [T, H, W] bool ground truth (None when unknown)
    original_size: tuple[int, int]  # (H, W) of the source frames
    paths: list[Path] | None = None  # source frame files, when read from disk

    def __len__(self) -> int:
        return len(self.frames)

    def source_frame(self, t: int) -> np.ndarray:
        """Frame ``t`` at its original resolution (read again from disk when it came from there)."""
        if self.paths is None:
            return cv2.resize(self.frames[t], self.original_size[::-1], interpolation=cv2.INTER_LINEAR)
        return cv2.cvtColor(cv2.imread(str(self.paths[t]), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)

    @property
    def scale(self) -> float:
        """Working pixels per original pixel."""
        return self.frames.shape[1] / self.original_size[0]


def working_size(height: int, width: int, short_side: int) -> tuple[int, int]:
    scale = short_side / min(height, width)
    return max(1, round(height * scale)), max(1, round(width * scale))


def from_frames(name: str, frames: list[np.ndarray], masks: list[np.ndarray] | None = None,
                short_side: int = 240) -> Video:
    """A video from RGB frames (and optional masks, nonzero = object) of one size."""
    if not frames:
        raise ValueError(f"video {name!r} has no frames")
    height, width = frames[0].shape[:2]
    if any(f.shape[:2] != (height, width) for f in frames):
        raise ValueError(f"video {name!r}: frames differ in size")
    if masks is not None and (len(masks) != len(frames) or any(m.shape[:2] != (height, width) for m in masks)):
        raise ValueError(f"video {name!r}: need one mask of the frame size per frame")
    h, w = working_size(height, width, short_side) if short_side else (height, width)
    small = np.stack([cv2.resize(f, (w, h), interpolation=cv2.INTER_AREA) for f in frames])
    gt = None if masks is None else np.stack(
        [cv2.resize((m > 0).astype(np.uint8), (w, h), interpolation=cv2.INTER_NEAREST) > 0 for m in masks])
    return Video(name, small, gt, (height, width))


def load_sequence(folder: Path, short_side: int = 240, max_frames: int = 0) -> Video:
    """One sequence folder (``frames/`` and, when present, ``masks/``); ``max_frames`` > 0 cuts it short."""
    folder = Path(folder)
    paths = sorted(p for p in (folder / "frames").glob("*") if p.suffix.lower() in FRAME_SUFFIXES)
    if not paths:
        raise FileNotFoundError(f"no frames in {folder / 'frames'}")
    if max_frames:
        paths = paths[:max_frames]
    frames = []
    for path in paths:
        image = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if image is None:
            raise ValueError(f"{path} is not a readable image")
        frames.append(cv2.cvtColor(image, cv2.COLOR_BGR2RGB))
    masks = None
    if (folder / "masks").is_dir():
        masks = []
        for path in paths:
            mask = cv2.imread(str(folder / "masks" / f"{path.stem}.png"), cv2.IMREAD_GRAYSCALE)
            if mask is None:
                raise FileNotFoundError(f"mask of frame {path.name} missing in {folder / 'masks'}")
            masks.append(mask)
    video = from_frames(folder.name, frames, masks, short_side)
    video.paths = paths
    return video


def sequences(data: Path, names: list[str] | None = None) -> list[Path]:
    """Sequence folders under ``data`` (those named, in that order, or all, sorted)."""
    data = Path(data)
    if names:
        missing = [n for n in names if not (data / n / "frames").is_dir()]
        if missing:
            raise FileNotFoundError(f"no sequence {', '.join(missing)} under {data}")
        return [data / n for n in names]
    found = sorted(p for p in data.iterdir() if (p / "frames").is_dir())
    if not found:
        raise FileNotFoundError(f"no <sequence>/frames folders under {data}")
    return found
