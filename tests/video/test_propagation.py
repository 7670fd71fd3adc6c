"""Flow warping, labels and test-time fine-tuning on a real DAVIS sequence, cut short."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from services.common.masks import iou
from services.video.flow import (
    compute_flows,
    propagate_interpolate,
    propagate_nearest,
    warp,
)
from services.video.frames import from_frames, load_sequence
from services.video.propagation import (
    FineTuneConfig,
    Labels,
    Propagator,
    load_network,
    temporal_loss,
)

pytestmark = pytest.mark.unit


@pytest.fixture(scope="module")
def car_shadow(video_data):
    """Every 4th of the first 40 frames at 96 px: ten frames with motion enough for flow warps to drift."""
    video = load_sequence(video_data / "car-shadow", short_side=96, max_frames=40)
    frames, masks = video.frames[::4], video.masks[::4]
    return frames, masks, compute_flows(frames)


def ends_labelled(masks: np.ndarray) -> Labels:
    labels = Labels.empty(*masks.shape)
    for t in (0, len(masks) - 1):
        labels.add(t, np.ones_like(masks[t]), masks[t])
    return labels


def held_out_miou(prob: np.ndarray, masks: np.ndarray) -> float:
    return float(np.mean([iou(prob[t] > 0.5, masks[t]) for t in range(1, len(masks) - 1)]))


def test_flow_warp_follows_a_known_shift(video_data):
    video = load_sequence(video_data / "dog", short_side=96, max_frames=1)
    frame, mask = video.frames[0], video.masks[0]
    shifted = [np.roll(frame, 4, axis=1), np.roll(mask, 4, axis=1)]
    clip = from_frames("shift", [frame, shifted[0]], [mask, shifted[1]], short_side=0)
    flows = compute_flows(clip.frames)
    moved = propagate_nearest({0: clip.masks[0]}, flows, 2)[1] > 0.5
    inner = np.s_[:, 8:-8]  # np.roll wraps around at the border
    assert iou(moved[inner], clip.masks[1][inner]) > 0.9
    assert iou(moved[inner], clip.masks[1][inner]) > iou(clip.masks[0][inner], clip.masks[1][inner]) + 0.1
    assert np.allclose(warp(np.ones((5, 6)), np.zeros((5, 6, 2), np.float32)), 1.0)


def test_fine_tuning_beats_flow_warping_on_held_out_frames(car_shadow):
    frames, masks, flows = car_shadow
    labels = ends_labelled(masks)
    nearest = propagate_nearest(labels.full_frames(), flows, len(frames))
    interpolated = propagate_interpolate(labels.full_frames(), flows, len(frames))
    tuned = Propagator(frames, flows, FineTuneConfig(steps=30)).propagate(labels, interpolated)
    baseline = max(held_out_miou(nearest, masks), held_out_miou(interpolated, masks))
    assert held_out_miou(tuned, masks) > baseline + 0.03
    # Human labels override the network where they exist.
    assert np.array_equal(tuned[0] > 0.5, masks[0]) and np.array_equal(tuned[-1] > 0.5, masks[-1])


def test_temporal_term_makes_predictions_more_consistent(car_shadow):
    frames, masks, flows = car_shadow
    labels = ends_labelled(masks)
    start = propagate_interpolate(labels.full_frames(), flows, len(frames))
    unlabelled = Labels.empty(*masks.shape)

    def inconsistency(weight: float) -> tuple[float, list[dict]]:
        propagator = Propagator(frames, flows, FineTuneConfig(steps=30, temporal_weight=weight))
        history = propagator.fine_tune(labels, start)
        prob = torch.from_numpy(propagator.predict(unlabelled, start))
        return float(temporal_loss(prob[:-1], prob[1:], propagator.grids, propagator.valid)), history

    without, history = inconsistency(0.0)
    with_term, _ = inconsistency(5.0)
    assert with_term < 0.9 * without
    # The supervised loss goes down while fine-tuning.
    assert np.mean([h["supervised"] for h in history[-5:]]) < np.mean([h["supervised"] for h in history[:5]])


def test_temporal_loss_is_zero_for_a_consistent_pair_and_grows_with_disagreement():
    prob = torch.zeros(1, 8, 8)
    prob[:, 2:6, 2:6] = 1
    ys, xs = torch.meshgrid(torch.linspace(-1, 1, 8), torch.linspace(-1, 1, 8), indexing="ij")
    identity = torch.stack([xs, ys], -1)[None]
    valid = torch.ones(1, 1, 8, 8)
    assert float(temporal_loss(prob, prob, identity, valid)) == pytest.approx(0.0, abs=1e-6)
    assert float(temporal_loss(prob, torch.roll(prob, 2, dims=2), identity, valid)) > 0.1


def test_shipped_weights_load_into_the_eager_network():
    net = load_network()
    assert net.in_channels == 7
    assert net(torch.zeros(1, 7, 32, 48)).shape == (1, 1, 32, 48)


def test_bad_input_is_refused_with_a_clear_error(car_shadow):
    frames, masks, flows = car_shadow
    labels = Labels.empty(*masks.shape)
    with pytest.raises(ValueError, match="does not match"):
        labels.add(0, np.ones((3, 3), bool), np.ones((3, 3), bool))
    with pytest.raises(ValueError, match="outside"):
        labels.add(len(masks), np.ones_like(masks[0]), masks[0])
    with pytest.raises(ValueError, match="at least one annotated"):
        propagate_nearest({}, flows, len(frames))
    with pytest.raises(ValueError, match="no labelled pixel"):
        Propagator(frames, flows, FineTuneConfig(steps=1)).fine_tune(labels, np.zeros(masks.shape, np.float32))
    with pytest.raises(ValueError, match="unknown optical flow"):
        compute_flows(frames[:2], "lucas-kanade")
