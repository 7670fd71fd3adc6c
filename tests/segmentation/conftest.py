"""Model tests run single-threaded: tiny tensors gain nothing from threads, and OpenMP spin-waits
make them 70x slower when another process (a background training run) holds the cores."""

import pytest
import torch


@pytest.fixture(autouse=True)
def _one_torch_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
