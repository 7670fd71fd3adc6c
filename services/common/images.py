"""Decoding of images that come from outside: bytes -> RGB uint8 array, or a clear refusal.

The pixel limit is checked on the header, before any pixel is decoded, so a decompression bomb
(a small file that expands to gigabytes) is refused without being expanded.
"""

from __future__ import annotations

import io
import re
import warnings

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from services.common.errors import InvalidArgument

FORMATS = ("JPEG", "PNG", "WEBP", "BMP", "TIFF")


_REPR = re.compile(r"<[^<>]*? at 0x[0-9a-fA-F]+>")


def _said(exc: Exception) -> str:
    """A decoder's message fit for a client: no Python object reprs (``<_io.BytesIO object at 0x...>``)."""
    return _REPR.sub("the image", str(exc))


def decode_image(data: bytes, max_bytes: int, max_pixels: int, field: str = "image_data") -> np.ndarray:
    """(H, W, 3) uint8 RGB, EXIF orientation applied. Raises InvalidArgument naming ``field``."""
    if not data:
        raise InvalidArgument(field, "the image bytes are empty")
    if len(data) > max_bytes:
        raise InvalidArgument(field, f"{len(data)} bytes is over the limit of {max_bytes} bytes")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data), formats=FORMATS)
            width, height = image.size
            if width * height > max_pixels:
                raise InvalidArgument(
                    field, f"{width}x{height} = {width * height} pixels is over the limit of {max_pixels}"
                )
            if width < 1 or height < 1:
                raise InvalidArgument(field, f"image has no pixels ({width}x{height})")
            image = ImageOps.exif_transpose(image).convert("RGB")
            array = np.asarray(image, dtype=np.uint8)
    except InvalidArgument:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise InvalidArgument(field, f"image is over the limit of {max_pixels} pixels: {_said(exc)}") from None
    except UnidentifiedImageError:  # PIL's message is only the repr of our BytesIO
        raise InvalidArgument(field, f"not a decodable image: the bytes are none of {', '.join(FORMATS)}") from None
    except (OSError, ValueError, SyntaxError, EOFError) as exc:  # truncated or corrupt data
        raise InvalidArgument(field, f"corrupt or truncated image: {_said(exc)}") from None
    except Exception as exc:  # noqa: BLE001 - PIL's plugins raise other types on hostile bytes too
        # (a TIFF whose strip offset is a rational: TypeError; found by fuzz/targets.py:image)
        raise InvalidArgument(field, f"corrupt image ({type(exc).__name__}: {_said(exc)})") from None
    return np.ascontiguousarray(array)


def encode_png(image: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()
