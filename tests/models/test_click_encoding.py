from pathlib import Path

import numpy as np
import pytest

from services.common.clicks import Click
from services.models import click_encoding as encoding
from services.models.colour_prior import colour_prior

pytestmark = pytest.mark.unit
DATA = Path(__file__).parents[2].parent / "shared" / "data"


def test_disk_radius_is_exact():
    maps = encoding.disk_maps([Click(20, 30, True), Click(5, 5, False)], 60, 50, radius=5)
    pos, neg = maps
    assert pos[30, 25] == 1 and pos[30, 26] == 0 and pos[35, 20] == 1 and pos[36, 20] == 0
    assert pos[34, 23] == 1 and pos[34, 24] == 0  # 4^2 + 3^2 = 25 inside, 4^2 + 4^2 outside
    assert pos.sum() == 81  # lattice points with x^2 + y^2 <= 25
    assert neg[5, 5] == 1 and neg[30, 20] == 0 and pos[5, 5] == 0


def test_encode_channels():
    image = np.full((40, 30, 3), 128, np.uint8)
    x = encoding.encode(image, [Click(3, 4, True)], None, with_prior=False)
    assert x.shape == (6, 40, 30) and x.dtype == np.float32
    assert x[3, 4, 3] == 1 and x[4].sum() == 0 and x[5].sum() == 0
    assert encoding.encode(image, [Click(3, 4, True)], None).shape == (7, 40, 30)


def test_colour_prior_separates_colours():
    image = np.zeros((60, 60, 3), np.uint8)
    image[15:45, 15:45] = (200, 30, 30)  # a red square on black; the window border is background
    prior = colour_prior(image, [Click(30, 30, True)], None)
    assert prior[17, 43] > 0.9 and prior[5, 5] < 0.1 and prior[50, 30] < 0.1


def test_first_crop_is_whole_image_then_zooms_on_object():
    shape = (300, 400)
    first = encoding.zoom_crop(shape, [Click(200, 150, True)], None, size=100)
    assert first.side == 400 and first.x0 == 0 and first.y0 == -50
    prev = np.zeros(shape, np.float32)
    prev[100:200, 150:250] = 1
    crop = encoding.zoom_crop(shape, [Click(200, 150, True)], prev, size=100)
    assert crop.side == pytest.approx(140) and crop.x0 == pytest.approx(130)


def test_prepare_restore_round_trip():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (120, 160, 3), dtype=np.uint8)
    prev = np.zeros((120, 160), np.float32)
    prev[40:80, 60:100] = 1
    clicks = [Click(80, 60, True)]
    x, crop = encoding.prepare(image, clicks, prev, size=64)
    assert x.shape == (7, 64, 64)
    cx = crop.to_crop(clicks[0])
    assert x[3, cx.y, cx.x] == 1
    back = encoding.restore(x[5], crop, (120, 160), prev)
    assert np.mean((back > 0.5) == (prev > 0.5)) > 0.98


def test_prepare_on_real_image():
    from services.models.click_dataset import load_folder

    # ../shared sits beside the project in CI too: a missing file is a failure, not a skip.
    sample = load_folder(DATA / "grabcut", ["124080"])[0]
    x, crop = encoding.prepare(sample.image, [Click(100, 100, True)], None)
    assert x.shape == (7, encoding.INPUT_SIZE, encoding.INPUT_SIZE) and np.isfinite(x).all()
