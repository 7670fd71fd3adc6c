"""Decoding outside bytes: real images in, clear refusals for everything else, bombs never expanded."""

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from services.common.errors import InvalidArgument
from services.common.images import decode_image, encode_png

pytestmark = pytest.mark.unit

LIMITS = {"max_bytes": 5_000_000, "max_pixels": 2_000_000}


def _png_header_only(width: int, height: int) -> bytes:
    """A tiny PNG that claims width x height: all zeros compress to almost nothing (a bomb)."""
    raw = zlib.compress(b"\x00" * (1 + width) * 64, 9)  # only 64 rows of data, the rest missing
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", raw) + chunk(b"IEND", b""))


def test_png_and_jpeg_decode_to_rgb():
    image = np.random.default_rng(0).integers(0, 255, (30, 40, 3), dtype=np.uint8)
    assert (decode_image(encode_png(image), **LIMITS) == image).all()
    buffer = io.BytesIO()
    Image.fromarray(image[..., 0]).save(buffer, format="JPEG")  # greyscale JPEG -> 3 channels
    assert decode_image(buffer.getvalue(), **LIMITS).shape == (30, 40, 3)


def test_exif_orientation_is_applied():
    image = Image.fromarray(np.zeros((10, 20, 3), np.uint8))
    exif = image.getexif()
    exif[0x0112] = 6  # rotate 90
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", exif=exif)
    assert decode_image(buffer.getvalue(), **LIMITS).shape == (20, 10, 3)


@pytest.mark.parametrize("data, words", [
    (b"", "empty"),
    (b"GIF89a" + b"\x00" * 100, "not a decodable image"),
    (b"%PDF-1.4 hello", "not a decodable image"),
    (encode_png(np.zeros((50, 50, 3), np.uint8))[:60], "corrupt or truncated"),
])
def test_bad_bytes_are_refused_naming_the_field(data, words):
    with pytest.raises(InvalidArgument) as err:
        decode_image(data, **LIMITS)
    assert err.value.field == "image_data" and words in err.value.message


def test_a_decompression_bomb_is_refused_from_its_header():
    bomb = _png_header_only(30_000, 30_000)  # 900 Mpx claimed by a file of a few hundred bytes
    assert len(bomb) < 2000
    with pytest.raises(InvalidArgument) as err:
        decode_image(bomb, **LIMITS)
    assert "over the limit" in err.value.message


def test_byte_limit():
    with pytest.raises(InvalidArgument) as err:
        decode_image(b"x" * 101, max_bytes=100, max_pixels=10)
    assert "101 bytes" in err.value.message
