"""Hostile COCO RLE masks into ``decode_rle`` (previous/initial masks in segmentation requests,
corrected masks in quality reviews, answers in the dialog service).

Invariant: a (H, W) bool mask whose runs cover exactly H x W, or ``InvalidArgument`` naming
``<field>.size`` or ``<field>.counts``; never another exception, never a write past the mask
(pycocotools' own decoder trusts the runs, which is why ``runs_from_counts`` parses them).
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from pycocotools import mask as mask_utils

from services.common.errors import InvalidArgument
from services.common.masks import decode_rle, encode_rle, runs_from_counts

pytestmark = pytest.mark.unit

SETTINGS = settings(max_examples=300, deadline=None)
ALPHABET = "".join(chr(48 + i) for i in range(64))  # what the COCO compressed string may hold
shapes = st.tuples(st.integers(1, 40), st.integers(1, 40))


def decoded_or_refused(size, counts, shape, field="previous_mask"):
    try:
        mask = decode_rle(size, counts, shape, field)
    except InvalidArgument as exc:
        assert exc.field in (f"{field}.size", f"{field}.counts"), exc.field
        return None
    assert mask.dtype == bool and mask.shape == tuple(shape)
    return mask


@SETTINGS
@given(st.lists(st.integers(-5, 100), max_size=3), st.text(max_size=200), shapes)
@example([2, 2], "", (2, 2))
@example([2, 2], "4", (2, 2))
@example([2, 2], "04", (2, 2))
@example([1, 1], "\udcff", (1, 1))  # a lone surrogate: not encodable
@example([3, 3], "0" * 8 + "1", (3, 3))  # a number too long
@example([3, 3], "_", (3, 3))  # a continuation bit, then the end
def test_arbitrary_counts_and_sizes(size, counts, shape):
    decoded_or_refused(size, counts, shape)


@SETTINGS
@given(shapes, st.text(alphabet=ALPHABET, max_size=120))
def test_strings_in_the_rle_alphabet(shape, counts):
    """Runs that are negative, too long, too short, or overflow once summed are all refused."""
    mask = decoded_or_refused(list(shape), counts, shape)
    if mask is not None:  # whatever we accept, pycocotools reads the same way
        rle = {"size": list(shape), "counts": counts.encode()}
        assert np.array_equal(mask_utils.decode(rle).astype(bool), mask)


@SETTINGS
@given(shapes, st.integers(0, 2**32 - 1), st.floats(0, 1))
def test_valid_masks_round_trip(shape, seed, density):
    mask = np.random.default_rng(seed).random(shape) < density
    size, counts = encode_rle(mask)
    assert np.array_equal(decode_rle(size, counts, shape, "mask"), mask)
    assert runs_from_counts(counts).sum() == mask.size


@pytest.mark.parametrize("counts", ["0" + "o" * 6 + "?", "P" * 7 + "0", "_" * 7 + "1"])
def test_huge_runs_are_refused_without_allocating(counts):
    """A single run of ~2**34 pixels declared in a few characters: refused by the sum check."""
    with pytest.raises(InvalidArgument) as refused:
        decode_rle([4, 4], counts, (4, 4), "initial_mask")
    assert refused.value.field == "initial_mask.counts"


def test_runs_that_grow_by_deltas_are_refused():
    """COCO counts after the second are deltas: a chain of positive deltas, refused by the sum."""
    counts = "0" + "O" * 50  # each "O" is +31 relative to the run two before
    with pytest.raises(InvalidArgument):
        decode_rle([10, 10], counts, (10, 10), "mask")


def _reference_runs(counts: str) -> list[int]:
    """pycocotools' rleFrString, one character at a time (the parser this module had before)."""
    runs: list[int] = []
    pos, data = 0, counts.encode("ascii")
    while pos < len(data):
        value, shift, more = 0, 0, True
        while more:
            if pos >= len(data):
                raise ValueError("ends inside a number")
            c = data[pos] - 48
            if not 0 <= c <= 63:
                raise ValueError("alphabet")
            value |= (c & 0x1F) << (5 * shift)
            more = bool(c & 0x20)
            pos, shift = pos + 1, shift + 1
            if not more and c & 0x10:
                value |= -1 << (5 * shift)
            if shift > 7:
                raise ValueError("too long")
        if len(runs) > 2:
            value += runs[-2]
        if value < 0:
            raise ValueError("negative")
        runs.append(value)
    return runs


@settings(max_examples=500, deadline=None)
@given(st.text(alphabet=ALPHABET + "\x7f ", max_size=60) | st.builds(
    lambda mask: encode_rle(mask)[1], st.lists(st.booleans(), min_size=1, max_size=60).map(
        lambda bits: np.array(bits)[None, :])))
def test_vectorised_parser_agrees_with_pycocotools_reference(counts):
    try:
        expected = _reference_runs(counts)
    except ValueError:
        with pytest.raises(ValueError):
            runs_from_counts(counts)
        return
    assert runs_from_counts(counts).tolist() == expected


def test_a_counts_string_near_the_message_limit_is_refused_by_one_pass():
    """32 MB of counts: the old per-character loop held a thread for tens of seconds; refused here
    (its runs do not cover the mask) after one vectorised pass. No time is asserted: the point is the
    refusal naming the field; the loop's cost is what the vectorised parser removed."""
    with pytest.raises(InvalidArgument) as refused:
        decode_rle([2048, 2048], "1" + "0" * (32 << 20), (2048, 2048), "previous_mask")
    assert refused.value.field == "previous_mask.counts"
