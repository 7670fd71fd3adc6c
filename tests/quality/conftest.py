import numpy as np
import pytest

from services.quality.scorer import Scorer
from services.quality.train import featurise, fit
from tests.quality.helpers import make_summary


@pytest.fixture(scope="session")
def tiny_scorer() -> Scorer:
    """A model trained in a second on synthetic good and bad sessions (not the shipped weights)."""
    summaries = [make_summary(f"g{i}", clicks=2 + i % 3) for i in range(8)] + \
                [make_summary(f"b{i}", clicks=2 + i % 4, good=False) for i in range(8)]
    ious = np.asarray([0.95] * 8 + [0.3] * 8, np.float32)
    return Scorer(fit(featurise(summaries), ious, members=2, epochs=40, hidden=8), "tiny")
