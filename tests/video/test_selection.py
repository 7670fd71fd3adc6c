"""Selection over a video and the simulated annotator's cost model, on real DAVIS frames."""

from __future__ import annotations

import numpy as np
import pytest

from services.simulation.video_annotator import (
    LEVELS,
    VideoAnnotator,
    click_frame,
    region_cost,
)
from services.video.frames import load_sequence
from services.video.selection import GRANULARITIES, candidates, make_grids, select

pytestmark = pytest.mark.unit


@pytest.fixture(scope="module")
def dog(video_data):
    return load_sequence(video_data / "dog", short_side=96, max_frames=6)


def blurred_truth(masks: np.ndarray) -> np.ndarray:
    """A prediction unsure near the object boundary and in the later frames."""
    import cv2

    prob = np.stack([cv2.GaussianBlur(m.astype(np.float32), (0, 0), 1 + t) for t, m in enumerate(masks)])
    return np.clip(prob, 0, 1).astype(np.float32)


@pytest.mark.parametrize("granularity", list(GRANULARITIES))
def test_selection_picks_b_distinct_samples_from_the_uncertain_half(dog, granularity):
    prob = blurred_truth(dog.masks)
    grids = make_grids(granularity, dog.frames, dog.original_size)
    cands = candidates(prob, dog.frames, grids, np.zeros(prob.shape, bool))
    budget = 3
    rows = select(cands, budget, seed=0)
    assert len(rows) == budget
    assert len({(cands.frame[r], cands.region[r]) for r in rows}) == budget
    half = np.sort(cands.uncertainty)[::-1][int(np.ceil(len(cands.uncertainty) / 2)) - 1]
    assert all(cands.uncertainty[r] >= half for r in rows)
    assert list(cands.uncertainty[rows]) == sorted(cands.uncertainty[rows], reverse=True)
    assert all(cands.pixels(r).any() for r in rows)


def test_labelled_regions_are_not_offered_again(dog):
    prob = blurred_truth(dog.masks)
    grids = make_grids("frame", dog.frames, dog.original_size)
    known = np.zeros(prob.shape, bool)
    first = candidates(prob, dog.frames, grids, known)
    top = first.frame[select(first, 1)[0]]
    known[top] = True
    again = candidates(prob, dog.frames, grids, known)
    assert top not in set(again.frame) and len(again.frame) == len(first.frame) - 1
    with pytest.raises(ValueError, match="budget"):
        select(again, 0)
    with pytest.raises(ValueError, match="unknown granularity"):
        make_grids("polygon", dog.frames, dog.original_size)


def test_region_cost_one_click_when_pure_more_when_the_boundary_crosses(dog):
    gt = dog.masks[0]
    ys, xs = np.nonzero(gt)
    inside = np.zeros_like(gt)
    inside[ys[len(ys) // 2], xs[len(xs) // 2]] = True
    background = np.zeros_like(gt)
    background[0:3, 0:3] = True
    assert not gt[background].any()
    assert region_cost(gt, inside, dog.scale) == 1
    assert region_cost(gt, background, dog.scale) == 1
    assert region_cost(gt, np.ones_like(gt), dog.scale) > 5  # the whole outline as polygon vertices


def test_interactive_frame_costs_the_clickers_clicks(dog):
    perfect = lambda clicks, prev: dog.masks[0].astype(np.float32)  # noqa: E731
    run = click_frame(perfect, dog.masks[0])
    assert all(run.noc[level] == 1 and run.reached[level] for level in LEVELS)
    empty = click_frame(lambda clicks, prev: np.zeros(dog.masks[0].shape, np.float32), dog.masks[0], max_clicks=3)
    assert all(empty.noc[level] == 3 and not empty.reached[level] for level in LEVELS)
    annotator = VideoAnnotator(dog.frames, dog.masks, dog.masks, dog.scale, lambda image: perfect)
    answer = annotator.frame(0)
    assert answer.clicks == 1 and answer.pixels.all() and np.array_equal(answer.mask, dog.masks[0])
