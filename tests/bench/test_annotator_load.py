"""The load test's description of what it loaded: the served model's refinement, wherever it runs."""

from __future__ import annotations

import pytest

from bench.annotator_load import served_refinement
from services.common.settings import Settings

pytestmark = pytest.mark.unit


def test_the_refinement_named_is_the_one_the_served_model_runs():
    # the default pipeline model refines (or not) in Triton, as its config says; the service's setting is moot
    assert served_refinement(Settings(segmentation_refine=True)) == "none (in Triton)"
    # the network-only model is refined by the segmentation service when its setting says so
    assert served_refinement(Settings(triton_model_name="clickseg", segmentation_refine=True)) == \
        "grabcut (in the segmentation service)"
    assert served_refinement(Settings(triton_model_name="clickseg", segmentation_refine=False)) == "none"
