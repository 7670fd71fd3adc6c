"""Each project's quality model as the training service publishes it: stored in order, scored with, withdrawn."""

from __future__ import annotations

import base64
import io

import numpy as np
import pytest
import torch

from services.common.errors import InvalidArgument
from services.common.storage import make_engine, make_session_factory, migrate
from services.quality.project_models import ProjectModels, model_version
from services.quality.sessions import score_summaries
from services.quality.train import featurise, fit
from tests.quality.helpers import make_summary

pytestmark = pytest.mark.unit


def weights_b64(seed: int) -> str:
    summaries = [make_summary(f"g{i}", clicks=2 + i % 3) for i in range(6)] + \
                [make_summary(f"b{i}", clicks=2 + i % 4, good=False) for i in range(6)]
    torch.manual_seed(seed)
    ensemble = fit(featurise(summaries), np.asarray([0.95] * 6 + [0.3] * 6, np.float32), members=1, epochs=5 + seed,
                   hidden=4)
    buffer = io.BytesIO()
    torch.save(ensemble.state(), buffer)
    return base64.b64encode(buffer.getvalue()).decode()


@pytest.fixture
def models(tmp_path, tiny_scorer) -> ProjectModels:
    url = f"sqlite:///{tmp_path / 'q.db'}"
    migrate(url)
    return ProjectModels(make_session_factory(make_engine(url)), tiny_scorer)


def test_a_published_version_scores_its_project_only_until_withdrawn_and_late_messages_change_nothing(models):
    summary = make_summary("s", clicks=3)
    assert models.scorer("p1") is models.base
    assert models.publish("p1", 1, weights_b64(1), {"roc_auc": 0.9}, published_ns=10)
    [own] = score_summaries(models.scorer("p1"), [summary])
    [shipped] = score_summaries(models.scorer("p2"), [summary])
    assert own.model_version == model_version("p1", 1) == "project:p1:v1" and shipped.model_version == "tiny"
    assert own.predicted_iou != pytest.approx(shipped.predicted_iou, abs=1e-6)
    assert models.scorer("p1") is models.scorer("p1")  # built once per publication

    assert not models.publish("p1", 2, weights_b64(2), {}, published_ns=5)  # older than what is stored
    assert models.scorer("p1").version == "project:p1:v1"
    assert models.publish("p1", 2, weights_b64(2), {}, published_ns=11)
    assert models.scorer("p1").version == "project:p1:v2"
    assert models.publish("p1", 0, "", {}, published_ns=12)  # rolled back to nothing: the shipped model
    assert models.scorer("p1") is models.base


def test_bad_publications_are_refused_naming_the_field(models):
    garbage = base64.b64encode(b"not a model").decode()
    for args, field in [(("", 1, weights_b64(1)), "project_id"), (("p", 0, weights_b64(1)), "version"),
                        (("p", 1, ""), "version"), (("p", 1, "%%%"), "weights"), (("p", 1, garbage), "weights")]:
        with pytest.raises(InvalidArgument) as error:
            models.publish(*args, {}, published_ns=1)
        assert error.value.field == field
    assert models.scorer("p") is models.base
