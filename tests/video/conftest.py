"""Real DAVIS 2016 sequences from ../shared/data/video, cut short and small so fine-tuning runs on CPU."""

from __future__ import annotations

import pytest
import torch

from tests.conftest import SHARED_DATA

VIDEO_DATA = SHARED_DATA / "video"


@pytest.fixture(autouse=True)
def _one_thread():
    # CI has two cores shared by the whole suite; one thread also makes the fine-tuning reproducible.
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="session")
def video_data():
    if not (VIDEO_DATA / "car-shadow" / "frames").is_dir():
        pytest.fail(f"{VIDEO_DATA} is missing: the video tests read the DAVIS sequences there")
    return VIDEO_DATA
