"""Hostile image bytes into ``decode_image`` (segmentation StartSession/Predict, gateway uploads).

Invariant: an (H, W, 3) uint8 array within the pixel limit, or ``InvalidArgument`` naming the
field; never another exception, never a decompression bomb expanded.
"""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from PIL import Image

from services.common.errors import InvalidArgument
from services.common.images import FORMATS, decode_image

pytestmark = [pytest.mark.unit, pytest.mark.filterwarnings("ignore::UserWarning")]

FIELD = "image_data"
MAX_BYTES, MAX_PIXELS = 1 << 20, 512 * 512
SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def decoded_or_refused(data: bytes, max_pixels: int = MAX_PIXELS, field: str = FIELD) -> np.ndarray | None:
    try:
        image = decode_image(data, MAX_BYTES, max_pixels, field=field)
    except InvalidArgument as exc:
        assert exc.field == field and exc.message, exc
        return None
    assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3
    assert 1 <= image.shape[0] * image.shape[1] <= max_pixels
    return image


def encode(array: np.ndarray, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format=fmt, **options)
    return buffer.getvalue()


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def png_bomb(width: int, height: int, rows: int | None = None) -> bytes:
    """A 1-bit PNG declaring width x height, its IDAT zeros compressed (a few hundred KB at most)."""
    compressor, parts = zlib.compressobj(9), []
    row = b"\0" * (1 + (width + 7) // 8 if rows is None else 16)
    for _ in range(height if rows is None else rows):
        parts.append(compressor.compress(row))
    parts.append(compressor.flush())
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", b"".join(parts)) + _chunk(b"IEND", b"")


small_images = st.builds(
    lambda h, w, fmt, seed: encode(np.random.default_rng(seed).integers(0, 255, (h, w, 3), dtype=np.uint8), fmt),
    st.integers(1, 24), st.integers(1, 24), st.sampled_from(FORMATS), st.integers(0, 2**16))


@SETTINGS
@given(st.binary(max_size=4096))
@example(b"")
@example(b"\x89PNG\r\n\x1a\n")
@example(b"\xff\xd8\xff")
@example(b"II*\x00")
@example(b"BM" + b"\xff" * 60)
@example(b"RIFF\x00\x00\x00\x00WEBPVP8 ")
@example(b"GIF89a\x01\x00\x01\x00")  # not an accepted format
@example(bytes.fromhex(  # a TIFF whose strip offset is a rational: PIL raised TypeError (found by fuzz/)
    "49492a00080000000a000001040001000000050000000101040001000000060000000201030003000000860000000301"
    "0300010000000100060100000300010000000200000011010500010000008c0000000800080001001000000000000800"
    "a2b98f42022638bb01d3010000ffff0f000000000000010000005a0000001c01f7000100000001000000000000000800"
    "a2b98f42"))
def test_arbitrary_bytes_are_refused_naming_the_field(data):
    assert decoded_or_refused(data) is None or len(data) > 0


@SETTINGS
@given(small_images, st.data())
def test_mutated_images_decode_or_are_refused(data, draw):
    """Byte flips, truncations and splices of valid images of every accepted format."""
    mutated = bytearray(data)
    for _ in range(draw.draw(st.integers(0, 8))):
        position = draw.draw(st.integers(0, len(mutated) - 1))
        mutated[position] = draw.draw(st.integers(0, 255))
    cut = draw.draw(st.integers(0, len(mutated)))
    tail = draw.draw(st.binary(max_size=64))
    decoded_or_refused(bytes(mutated[:cut]) + tail)


@SETTINGS
@given(small_images, st.integers(1, 200))
def test_truncated_images_are_refused(data, keep):
    """Any proper prefix of a valid image decodes to a valid array or is refused, never a crash."""
    decoded_or_refused(data[: max(0, len(data) - keep)])


@pytest.mark.parametrize("width,height", [(100_000, 100_000), (2**31 - 1, 2**31 - 1), (1, 2**31 - 1), (513, 512)])
def test_huge_declared_dimensions_are_refused_from_the_header(width, height):
    """Only the header says how big: refused before any pixel is decoded."""
    data = png_bomb(width, height, rows=1)
    with pytest.raises(InvalidArgument) as refused:
        decode_image(data, MAX_BYTES, MAX_PIXELS, field=FIELD)
    assert refused.value.field == FIELD and "pixels" in refused.value.message


def test_a_real_decompression_bomb_is_not_expanded():
    """20000 x 20000 pixels of zeros (400 Mpx, 50 MB even at one bit a pixel) in ~60 KB of PNG, and
    refused with a limit far above PIL's own bomb threshold too: the header check wins either way."""
    bomb = png_bomb(20_000, 20_000)
    assert len(bomb) < MAX_BYTES
    for limit in (MAX_PIXELS, 10**12):
        with pytest.raises(InvalidArgument) as refused:
            decode_image(bomb, MAX_BYTES, limit, field=FIELD)
        assert refused.value.field == FIELD and "pixels" in refused.value.message


def test_bytes_over_the_limit_are_refused_before_parsing():
    with pytest.raises(InvalidArgument) as refused:
        decode_image(b"\0" * (MAX_BYTES + 1), MAX_BYTES, MAX_PIXELS, field="files[3]")
    assert refused.value.field == "files[3]"


@pytest.mark.parametrize("mode", ["1", "L", "LA", "P", "RGBA", "CMYK", "I", "I;16", "F", "YCbCr"])
def test_every_pixel_mode_becomes_rgb_or_is_refused(mode):
    image = Image.new(mode, (7, 5))
    for fmt in FORMATS:
        buffer = io.BytesIO()
        try:
            image.save(buffer, format=fmt)
        except (OSError, ValueError, KeyError):
            continue  # this format cannot store this mode
        decoded = decoded_or_refused(buffer.getvalue())
        assert decoded is None or decoded.shape == (5, 7, 3)


def test_hostile_exif_orientation_is_applied_or_refused():
    array = np.zeros((6, 4, 3), np.uint8)
    for orientation in (0, 1, 5, 8, 9, 255, 65535):
        exif = Image.Exif()
        exif[0x0112] = orientation
        data = encode(array, "JPEG", exif=exif.tobytes())
        decoded = decoded_or_refused(data)
        assert decoded is None or decoded.shape in ((6, 4, 3), (4, 6, 3))


def test_selection_reads_only_local_images_within_the_limits(tmp_path):
    """Pool item URIs come from RegisterItems: anything but a readable image within the limits is
    "not at hand" (None), never an exception that fails the scoring task, never a bomb expanded."""
    from services.common.image_files import load_image  # noqa: PLC0415

    good = tmp_path / "ok.png"
    good.write_bytes(encode(np.zeros((4, 6, 3), np.uint8), "PNG"))
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(png_bomb(30_000, 30_000))
    text = tmp_path / "notes.txt"
    text.write_text("root:x:0:0")
    assert load_image(f"file://{good}").shape == (4, 6, 3) and load_image(str(good)).shape == (4, 6, 3)
    for uri in (f"file://{bomb}", str(text), str(tmp_path), "/dev/zero", "/proc/self/environ", "file:///nope.png",
                f"file://{good}%00.txt", "https://example.com/x.png", "s3://b/k.png", "", "\x00", "file://" + "a" * 5000):
        assert load_image(uri) is None, uri
