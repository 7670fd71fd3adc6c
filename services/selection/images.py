"""Reading a pool item's pixels from its URI (``file://`` or a plain path), when they are at hand."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import unquote, urlparse

import numpy as np
from PIL import Image


def local_path(uri: str) -> Path | None:
    if not uri:
        return None
    parsed = urlparse(uri)
    if parsed.scheme == "file":
        return Path(unquote(parsed.path))
    if parsed.scheme == "":
        return Path(uri)
    return None  # s3://, https://: not fetched by the selection service


def load_image(uri: str) -> np.ndarray | None:
    """(H, W, 3) uint8 RGB, or None when the URI is not a readable local file."""
    path = local_path(uri)
    if path is None or not path.is_file():
        return None
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))
