import numpy as np
import pytest

from services.common.clicks import Click
from services.common.masks import iou
from services.models.grabcut import grabcut, refine

pytestmark = pytest.mark.unit


def scene():
    rng = np.random.default_rng(0)
    image = rng.normal(60, 10, (80, 100, 3))
    image[20:60, 30:70] = rng.normal((200, 60, 40), 10, (40, 40, 3))
    gt = np.zeros((80, 100), bool)
    gt[20:60, 30:70] = True
    return np.clip(image, 0, 255).astype(np.uint8), gt


def test_grabcut_baseline_finds_object_from_one_click():
    image, gt = scene()
    assert iou(grabcut(image, [Click(50, 40, True)]) > 0.5, gt) > 0.9


def test_refine_snaps_a_rough_estimate_to_the_object():
    image, gt = scene()
    rough = np.full(gt.shape, 0.2, np.float32)  # nothing sure: GrabCut may move every pixel
    rough[15:55, 25:75] = 0.8  # shifted and too large, unsure
    refined = refine(image, rough, [Click(50, 40, True)])
    assert iou(refined > 0.5, gt) > 0.9 > iou(rough > 0.5, gt)


def large_scene():
    """An object in one corner of an image larger than the refinement's working size."""
    rng = np.random.default_rng(1)
    image = rng.normal(60, 10, (700, 900, 3))
    yy, xx = np.ogrid[:700, :900]
    gt = (yy - 180) ** 2 / 120**2 + (xx - 650) ** 2 / 170**2 <= 1
    image[gt] = rng.normal((200, 60, 40), 10, (int(gt.sum()), 3))
    return np.clip(image, 0, 255).astype(np.uint8), gt


def test_refine_works_in_a_downscaled_window_and_returns_full_resolution():
    image, gt = large_scene()
    rough = np.full(gt.shape, 0.2, np.float32)
    rough[40:330, 460:830] = 0.8  # the object's box, unsure
    refined = refine(image, rough, [Click(650, 180, True)], max_side=160)
    assert refined.shape == gt.shape
    assert iou(refined > 0.5, gt) > 0.9 > iou(rough > 0.5, gt)
    assert not refined[450:, :300].any()  # far outside the window: background


def test_refine_keeps_click_disks_at_full_resolution():
    image, gt = large_scene()
    rough = np.where(gt, 0.8, 0.2).astype(np.float32)
    wrong = Click(650, 180, False)  # a negative click inside the object must stay background
    refined = refine(image, rough, [Click(600, 150, True), wrong], max_side=100)
    assert refined[wrong.y, wrong.x] == 0.0 and refined[150, 600] == 1.0


def test_refine_without_object_or_positive_click_is_empty():
    image, _ = scene()
    assert not refine(image, np.zeros((80, 100), np.float32), [Click(5, 5, False)]).any()
