"""COCO RLE on the wire: exact round trips, and hostile counts strings refused, never decoded blindly."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pycocotools import mask as mask_utils

from services.common.clicks import Click
from services.common.errors import InvalidArgument
from services.common.masks import decode_rle, encode_rle
from services.segmentation.probability_stats import probability_stats

pytestmark = pytest.mark.unit


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 40), st.integers(1, 40), st.integers(0, 2**32 - 1), st.floats(0, 1))
def test_round_trip_equals_pycocotools(height, width, seed, density):
    mask = np.random.default_rng(seed).random((height, width)) < density
    size, counts = encode_rle(mask)
    assert size == [height, width]
    assert (decode_rle(size, counts, (height, width), "m") == mask).all()
    reference = mask_utils.decode({"size": size, "counts": counts.encode()})
    assert (reference.astype(bool) == mask).all()


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=130), max_size=40))
def test_arbitrary_strings_never_crash(counts):
    try:
        mask = decode_rle([7, 9], counts, (7, 9), "previous_mask")
    except InvalidArgument as err:
        assert err.field == "previous_mask.counts"
    else:
        assert mask.shape == (7, 9)


def test_runs_past_the_mask_are_refused():
    _, counts = encode_rle(np.ones((20, 20), bool))  # 400 pixels of runs
    with pytest.raises(InvalidArgument) as err:
        decode_rle([10, 10], counts, (10, 10), "m")  # claims a 10x10 mask: size mismatch named
    assert err.value.field == "m.counts"
    with pytest.raises(InvalidArgument) as err:
        decode_rle([10, 10], counts, (20, 20), "m")
    assert err.value.field == "m.size"


def test_probability_stats():
    prob = np.zeros((10, 10), np.float32)
    prob[2:6, 2:6] = 0.9
    prob[8, 8] = 0.5
    stats = probability_stats(prob, 0.5, Click(3, 3, True))
    assert stats["area_px"] == 16
    assert stats["mean_foreground_probability"] == pytest.approx(0.9)
    assert stats["uncertain_fraction"] == pytest.approx(0.01)
    assert 0.5 <= stats["mean_confidence"] <= 1 and stats["click_confidence"] > 0.8


def test_probability_stats_read_confidence_from_the_network_before_refinement():
    refined = np.zeros((10, 10), np.float32)
    refined[2:6, 2:6] = 1.0  # a refinement's near-binary map
    network = np.where(refined > 0, 0.6, 0.3).astype(np.float32)
    stats = probability_stats(refined, 0.5, Click(3, 3, True), network)
    assert stats["area_px"] == 16  # the area is the refined mask's
    assert stats["mean_foreground_probability"] == pytest.approx(0.6)
    assert stats["uncertain_fraction"] == pytest.approx(1.0)
    assert 0.6 <= stats["click_confidence"] < 0.7  # the disk straddles the boundary (0.6 and 0.7)
    assert probability_stats(refined, 0.5, Click(3, 3, True))["click_confidence"] == pytest.approx(1.0)
