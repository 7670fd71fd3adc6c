"""Reading an image's pixels from its URI (``file://`` or a plain path), when they are at hand.

Shared by the wings that read images by reference (selection's pool items, training's snapshot images).
URIs come from outside (RegisterItems, AnnotationSubmitted): the file must be a regular file, within the size limits,
and an image of an accepted format; anything else reads as "not at hand" (None), never a crash and
never a decompression bomb expanded (the same decoder as segmentation's, limits checked on the
header first).
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import unquote, urlparse

import numpy as np

from services.common.errors import InvalidArgument
from services.common.images import decode_image

MAX_IMAGE_BYTES = 256 * 1024 * 1024
MAX_IMAGE_PIXELS = 8192 * 8192


def local_path(uri: str) -> Path | None:
    if not uri or "\x00" in uri:
        return None
    parsed = urlparse(uri)
    if parsed.scheme == "file":
        return Path(unquote(parsed.path))
    if parsed.scheme == "":
        return Path(uri)
    return None  # s3://, https://: not fetched here


def load_image(uri: str, max_pixels: int = MAX_IMAGE_PIXELS) -> np.ndarray | None:
    """(H, W, 3) uint8 RGB, or None when the URI is not a readable local image within the limits."""
    path = local_path(uri)
    try:
        if path is None or not path.is_file() or path.stat().st_size > MAX_IMAGE_BYTES:
            return None
        return decode_image(path.read_bytes(), MAX_IMAGE_BYTES, max_pixels, field="uri")
    except (OSError, ValueError, InvalidArgument):  # unreadable, a name the OS refuses, not an image
        return None
