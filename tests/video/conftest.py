"""Real DAVIS 2016 sequences from ../shared/data/video, cut short and small so fine-tuning runs on CPU."""

from __future__ import annotations

import pytest

from tests.conftest import SHARED_DATA

# One torch thread: CI's two cores are shared by the whole suite, and it keeps fine-tuning reproducible.
from tests.segmentation.conftest import _one_torch_thread  # noqa: F401 (autouse fixture)

VIDEO_DATA = SHARED_DATA / "video"


@pytest.fixture(scope="session")
def video_data():
    if not (VIDEO_DATA / "car-shadow" / "frames").is_dir():
        pytest.fail(f"{VIDEO_DATA} is missing: the video tests read the DAVIS sequences there")
    return VIDEO_DATA
