import numpy as np
import pytest

from services.simulation.annotator import (
    PROFILES,
    Profile,
    SimulatedAnnotator,
    sample_profile,
)
from services.models.clicker import Clicker

pytestmark = pytest.mark.unit

EXACT = Profile(jitter_px=0.0, careless_p=0.0, wrong_sign_p=0.0, target_iou=0.9, perception_sd=0.0,
                give_up_p=0.0, pause_p=0.0)


def square(size=80, lo=20, hi=60):
    mask = np.zeros((size, size), np.uint8)
    mask[lo:hi, lo:hi] = 255
    return mask


def disk_segmenter(clicks, gt, radius=16):
    """A toy model: the object within a disk around each positive click, minus disks at negative ones."""
    ys, xs = np.ogrid[: gt.shape[0], : gt.shape[1]]
    mask = np.zeros(gt.shape, bool)
    for c in clicks:
        disk = (ys - c.y) ** 2 + (xs - c.x) ** 2 <= radius**2
        mask = mask | (disk & (gt > 128)) if c.positive else mask & ~disk
    return mask


def run(annotator, max_actions=50):
    """Drives a session like the service does (clicks applied, undo restores); the action log."""
    applied, mask, actions = [], None, []
    for _ in range(max_actions):
        action = annotator.next_action(mask)
        if action is None:
            break
        actions.append(action)
        if action.kind == "undo":
            applied.pop()
        else:
            applied.append(action.click)
        mask = disk_segmenter(applied, annotator.annotation) if applied else None
    return actions, mask


def test_exact_annotator_clicks_like_the_standard_clicker_and_stops_at_its_target():
    gt = square()
    annotator = SimulatedAnnotator(gt, EXACT, np.random.default_rng(0))
    first = annotator.next_action(None)
    assert first.kind == "click" and first.click == Clicker(gt).next_click(None)
    actions, mask = run(SimulatedAnnotator(gt, EXACT, np.random.default_rng(0)))
    assert all(a.kind == "click" for a in actions)
    assert annotator.true_iou(mask) >= 0.9
    assert len(actions) < EXACT.max_clicks


def test_time_increases_and_the_first_click_includes_finding_the_object():
    actions, _ = run(SimulatedAnnotator(square(), PROFILES["typical"], np.random.default_rng(1)))
    times = [a.t_ms for a in actions]
    assert times == sorted(times) and len(set(times)) == len(times)
    assert times[0] >= 200  # finding the object and moving there takes a moment


def test_slow_annotators_take_longer_than_fast_ones():
    def total(speed):
        profile = Profile(speed=speed, pause_p=0.0, give_up_p=0.0, perception_sd=0.0)
        return np.mean([run(SimulatedAnnotator(square(), profile, np.random.default_rng(s)))[0][-1].t_ms
                        / len(run(SimulatedAnnotator(square(), profile, np.random.default_rng(s)))[0])
                        for s in range(5)])

    assert total(0.5) > 1.5 * total(2.0)


def test_jittered_clicks_stay_in_the_image():
    gt = np.zeros((40, 50), np.uint8)
    gt[:, :25] = 255  # the object touches the border
    profile = Profile(jitter_px=200.0, target_iou=1.1, give_up_p=0.0, max_clicks=10)
    actions, _ = run(SimulatedAnnotator(gt, profile, np.random.default_rng(2)))
    assert len(actions) >= 3
    assert all(0 <= a.click.x < 50 and 0 <= a.click.y < 40 for a in actions)


def test_a_noticed_wrong_sign_click_is_undone():
    profile = Profile(jitter_px=0.0, careless_p=0.0, wrong_sign_p=1.0, notice_p=1.0, target_iou=0.9,
                      perception_sd=0.0, give_up_p=0.0, max_clicks=4)
    annotator = SimulatedAnnotator(square(), profile, np.random.default_rng(3))
    first = annotator.next_action(None)
    assert first.click.positive is False  # the slip: a negative click on the object
    good = disk_segmenter([Clicker(square()).next_click(None)], square())
    annotator._last_iou = annotator.true_iou(good)  # the mask was better before the slip
    undo = annotator.next_action(np.zeros((80, 80), bool))
    assert undo.kind == "undo" and annotator.undos == 1 and annotator.clicks == []
    assert undo.t_ms > first.t_ms


def test_the_click_budget_and_giving_up_end_a_session():
    budget = Profile(target_iou=1.1, give_up_p=0.0, max_clicks=3)
    actions, _ = run(SimulatedAnnotator(square(), budget, np.random.default_rng(4)))
    assert sum(a.kind == "click" for a in actions) - sum(a.kind == "undo" for a in actions) == 3
    quitter = Profile(target_iou=1.1, give_up_p=1.0, max_clicks=50)
    lengths = [len(run(SimulatedAnnotator(square(), quitter, np.random.default_rng(s)))[0]) for s in range(20)]
    assert max(lengths) <= 4 and min(lengths) >= 1  # certain to give up by the 4th click


def test_sessions_are_reproducible_from_the_seed():
    def actions(seed):
        return run(SimulatedAnnotator(square(), PROFILES["hasty"], np.random.default_rng(seed)))[0]

    assert actions(7) == actions(7)
    assert any(actions(s) != actions(7) for s in range(8, 12))


def test_sampled_profiles_are_sane_and_varied():
    rng = np.random.default_rng(0)
    profiles = [sample_profile(rng) for _ in range(200)]
    assert all(0.6 <= p.target_iou <= 0.99 and p.speed > 0 and p.jitter_px > 0 for p in profiles)
    assert len({p.max_clicks for p in profiles}) >= 2
    only = sample_profile(np.random.default_rng(1), {"sloppy": 1.0})
    assert only.max_clicks == PROFILES["sloppy"].max_clicks
