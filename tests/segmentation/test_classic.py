import numpy as np
import pytest

from services.segmentation.classic import grabcut, refine
from services.simulation.clicker import Click, iou

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
