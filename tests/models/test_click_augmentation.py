import numpy as np
import pytest

from services.models.click_dataset import Sample, _whole_object, augmented_crop, random_crop

pytestmark = pytest.mark.unit


def _sample(stem: str, colour: tuple[int, int, int], box: tuple[int, int, int, int]) -> Sample:
    image = np.zeros((120, 160, 3), np.uint8)
    image[:] = colour
    y0, y1, x0, x1 = box
    image[y0:y1, x0:x1] = 255 - np.array(colour, np.uint8)
    annotation = np.zeros((120, 160), np.uint8)
    annotation[y0:y1, x0:x1] = 255
    return Sample(stem, image, annotation)


SAMPLES = [_sample("a_1", (200, 30, 30), (40, 80, 60, 100)), _sample("b_2", (30, 200, 30), (20, 60, 30, 90)),
           _sample("c_3", (30, 30, 200), (50, 110, 90, 150))]


def test_paste_puts_the_whole_object_on_another_image():
    rng = np.random.default_rng(0)
    pasted = 0
    for _ in range(40):
        image, obj, ignore = augmented_crop(SAMPLES, 0, 64, rng, focus_p=0.0, paste_p=1.0, occlude_p=0.0)
        assert image.shape == (64, 64, 3) and obj.shape == ignore.shape == (64, 64)
        background = image[~obj & ~ignore].reshape(-1, 3).astype(int)
        # Sample 0's background is red; a pasted object stands on another sample's green or blue.
        if len(background) and int(np.argmax(background.mean(0))) != 0:
            pasted += 1
            assert not ignore.any()
    assert pasted > 10


def test_occluder_hides_part_of_the_object_and_its_ground_truth():
    rng = np.random.default_rng(1)
    shrunk = 0
    for _ in range(40):
        state = rng.bit_generator.state
        _, plain, _ = augmented_crop(SAMPLES, 0, 64, rng, focus_p=0.0, paste_p=0.0, occlude_p=0.0)
        rng.bit_generator.state = state
        _, occluded, _ = augmented_crop(SAMPLES, 0, 64, rng, focus_p=0.0, paste_p=0.0, occlude_p=1.0)
        assert not (occluded & ~plain).any()  # an occluder only ever removes object pixels
        assert occluded.sum() >= 0.5 * plain.sum()  # and never most of them
        shrunk += occluded.sum() < plain.sum()
    assert shrunk > 3


def test_boundary_close_ups_cut_through_the_object_edge():
    rng = np.random.default_rng(2)
    mixed = 0
    for _ in range(30):
        _, obj, ignore = random_crop(SAMPLES[0], 64, rng, whole_image_p=0.0, focus_p=1.0)
        mixed += 0.05 < obj[~ignore].mean() < 0.95
    assert mixed > 20


def test_an_object_cut_by_the_crop_edge_is_not_whole():
    obj = np.zeros((32, 32), bool)
    obj[10:20, 10:20] = True
    ignore = np.zeros_like(obj)
    assert _whole_object(obj, ignore)
    obj[0, 12] = True
    assert not _whole_object(obj, ignore)
    obj[0, 12] = False
    ignore[:, 21:] = True  # outside the source image right beside the object
    assert not _whole_object(obj, ignore)
