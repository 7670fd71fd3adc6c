"""The encoder's view of an image and a mask: on real photographs, a mask grown past the object reads as a
leak and one shrunk inside it as a miss."""

import numpy as np
import pytest
from scipy import ndimage

from services.common.clicks import split_annotation
from services.models.click_dataset import load_folder
from services.quality import image_features
from tests.conftest import SHARED_DATA

pytestmark = pytest.mark.unit


@pytest.fixture(scope="module")
def objects() -> list[tuple[np.ndarray, np.ndarray, int]]:
    """(image, true mask, a band width of 8% of the object's size) for 8 GrabCut photographs."""
    out = []
    for sample in load_folder(SHARED_DATA / "grabcut")[:8]:
        mask, _ = split_annotation(sample.annotation)
        out.append((sample.image, mask, max(3, int(0.08 * np.sqrt(mask.sum())))))
    return out


def feature(rows: list[np.ndarray], name: str) -> float:
    return float(np.mean([row[image_features.FEATURES.index(name)] for row in rows]))


def test_a_mask_grown_into_the_background_leaks_and_one_shrunk_inside_the_object_misses(objects):
    true = [image_features.extract(image, mask) for image, mask, _ in objects]
    grown = [image_features.extract(image, ndimage.binary_dilation(mask, iterations=r)) for image, mask, r in objects]
    shrunk = [image_features.extract(image, ndimage.binary_erosion(mask, iterations=r)) for image, mask, r in objects]
    assert feature(grown, "s8_leak") > feature(true, "s8_leak") + 0.2
    assert feature(shrunk, "s8_miss") > feature(true, "s8_miss") + 0.2
    assert feature(true, "s16_band_contrast") > feature(grown, "s16_band_contrast")  # the true edge is the sharpest
    assert all(row.shape == (len(image_features.FEATURES),) and np.all((row >= 0) & (row <= 1)) for row in true)


def test_an_empty_mask_has_no_evidence_and_a_mismatched_one_is_refused(objects):
    image, mask, _ = objects[0]
    assert not image_features.extract(image, np.zeros_like(mask)).any()
    with pytest.raises(ValueError, match="differ in size"):
        image_features.extract(image, mask[1:])
