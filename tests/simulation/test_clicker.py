import numpy as np
import pytest

from services.common.clicks import Click
from services.common.masks import iou
from services.models.clicker import Clicker, iou_curve, noc, summarize

pytestmark = pytest.mark.unit


def square(size=64, lo=20, hi=41):
    mask = np.zeros((size, size), np.uint8)
    mask[lo:hi, lo:hi] = 255
    return mask


def test_first_click_is_centre_of_missed_square():
    click = Clicker(square()).next_click(None)
    assert click == Click(x=30, y=30, positive=True)


def test_negative_click_in_centre_of_false_positive_square():
    gt = square()
    pred = gt > 0
    pred[2:13, 45:56] = True  # an 11x11 false positive away from the object
    click = Clicker(gt).next_click(pred)
    assert click == Click(x=50, y=7, positive=False)


def test_padding_treats_image_border_as_outside():
    gt = np.zeros((20, 40), np.uint8)
    gt[:, :10] = 255  # object touching the left border: its deepest point is mid-width, not the edge
    click = Clicker(gt).next_click(None)
    assert click.positive and click.x in (4, 5)


def test_ignore_pixels_are_never_clicked_and_leave_iou():
    gt = square()
    gt[20:41, 20:41][5:16, 5:16] = 128  # ignore the centre of the object
    clicker = Clicker(gt)
    for _ in range(10):
        click = clicker.next_click(np.zeros(gt.shape, bool))
        if click is None:
            break
        assert gt[click.y, click.x] != 128
    pred = gt > 0  # predicting the ignored centre as object costs nothing
    assert iou(pred, gt > 128, gt == 128) == 1.0


def test_no_click_when_prediction_is_perfect():
    gt = square()
    assert Clicker(gt).next_click(gt > 128) is None


def test_iou_values():
    a = np.zeros((10, 10), bool)
    b = a.copy()
    a[:, :5] = True
    b[:, :4] = True
    assert iou(b, a) == pytest.approx(0.8)
    assert iou(a & False, b & False) == 1.0


def test_state_restore_for_undo():
    clicker = Clicker(square())
    clicker.next_click(None)
    state = clicker.get_state()
    clicker.next_click(np.zeros((64, 64), bool))
    clicker.set_state(state)
    assert clicker.clicks == state


def test_protocol_counts_clicks_until_target():
    gt = square()

    def segment(clicks, prev):  # grows a square of side 4 * clicks around the first click
        r = 2 * len(clicks)
        out = np.zeros(gt.shape, np.float32)
        out[30 - r : 31 + r, 30 - r : 31 + r] = 1.0
        return out

    curve = iou_curve(segment, gt, max_clicks=20)
    assert len(curve) == 20 and curve[-1] == 1.0
    assert noc(curve, 0.9) == 5
    assert noc([0.1] * 20, 0.9) == 20
    figures = summarize([curve, [0.1] * 20])
    assert figures["noc90"] == 12.5 and figures["failed90"] == 1
