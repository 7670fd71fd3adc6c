"""The shipped Triton model repository (and any candidate): CPU config and its GPU variant in step, weights
present, encoding parameters equal to the training config of the shipped weights."""

import json
import re

import pytest

from services.common.settings import Settings, served_model_dir
from services.models import click_repository
from services.models.click_models import is_pipeline
from services.models.click_repository import set_parameter
from services.segmentation.export import CANDIDATES, MODEL_DIR

pytestmark = pytest.mark.unit

GPU_ONLY = [r"kind: KIND_\w+", r"max_batch_size: \d+", r"preferred_batch_size: \[[^\]]*\]",
            r"max_queue_delay_microseconds: \d+",
            # how the instance computes (ONNX Runtime on CPU, torch on CUDA; threads), not what
            r'(key: "(?:network_runtime|onnx_threads|torch_threads)" value: \{ string_value: )"[^"]*"']


def _body(text: str) -> str:
    body = "\n".join(line for line in text.splitlines() if not line.startswith("#"))
    for pattern in GPU_ONLY:
        body = re.sub(pattern, "<varies>", body)
    return body.strip()


SERVED = sorted(p for p in MODEL_DIR.parent.iterdir() if (p / "config.pbtxt").exists())
FOLDERS = SERVED + sorted(p for p in CANDIDATES.iterdir() if (p / "config.pbtxt").exists())


def test_the_default_model_is_served_with_its_weights():
    assert MODEL_DIR.parent / Settings().triton_model_name in SERVED
    assert {p.name for p in SERVED} >= {"clickseg", "clickseg_lite0"}


@pytest.mark.parametrize("folder", FOLDERS, ids=lambda p: p.name)
def test_gpu_variant_differs_only_in_instance_kind_and_batching(folder):
    cpu = (folder / "config.pbtxt").read_text()
    gpu = (folder / "configs" / "gpu.pbtxt").read_text()
    assert "kind: KIND_CPU" in cpu and "kind: KIND_GPU" in gpu
    assert _body(cpu) == _body(gpu)
    assert f'name: "{folder.name}"' in cpu


@pytest.mark.parametrize("folder", SERVED, ids=lambda p: p.name)
def test_encoding_parameters_match_the_shipped_weights(folder):
    card = json.loads((folder / "1" / "training.json").read_text())
    config = (folder / "config.pbtxt").read_text()
    assert f'key: "input_size" value: {{ string_value: "{card["config"]["size"]}" }}' in config
    if not is_pipeline(card["config"]):  # the service encodes the clicks: the input's channels are the encoding's
        assert f'dims: [ {card["config"]["in_channels"]}, -1, -1 ]' in config
    assert (folder / "1" / "model.pt").stat().st_size > 100_000
    assert card["train_command"] and card["validation"]["noc90"] > 0


def test_set_parameter_refuses_a_missing_key():
    text = 'parameters: { key: "a" value: { string_value: "1" } }'
    assert set_parameter(text, "a", "2") == 'parameters: { key: "a" value: { string_value: "2" } }'
    with pytest.raises(ValueError):
        set_parameter(text, "b", "2")
    shipped = (served_model_dir() / "config.pbtxt").read_text()
    before = click_repository.parameters(shipped)
    after = click_repository.parameters(set_parameter(shipped, "refine", "grabcut"))
    assert before["refine"] == "none" and after == {**before, "refine": "grabcut"}


def test_pipeline_refinement_reads_what_refines_a_served_map():
    def params(**values):
        return {"interface": "pipeline", **values}

    assert click_repository.pipeline_refinement(params()) == "none"
    assert click_repository.pipeline_refinement(params(refine="GrabCut")) == "grabcut"  # as model.py reads it
    assert click_repository.pipeline_refinement({"interface": "encoded", "refine": "grabcut"}) is None
    assert click_repository.pipeline_refinement({}) is None
    with pytest.raises(ValueError, match="refine must be none or grabcut"):
        click_repository.pipeline_refinement(params(refine="crf"))
    shipped = click_repository.parameters((served_model_dir() / "config.pbtxt").read_text())
    assert click_repository.pipeline_refinement(shipped) == "none"
