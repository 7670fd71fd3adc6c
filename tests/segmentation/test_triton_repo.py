"""The shipped Triton model repository: CPU config and its GPU variant in step, weights present,
encoding parameters equal to the training config of the shipped weights."""

import json
import re

import pytest

from services.segmentation.export import MODEL_DIR, set_parameter

pytestmark = pytest.mark.unit

GPU_ONLY = [r"kind: KIND_\w+", r"max_batch_size: \d+", r"preferred_batch_size: \[[^\]]*\]",
            r"max_queue_delay_microseconds: \d+"]


def _body(text: str) -> str:
    body = "\n".join(line for line in text.splitlines() if not line.startswith("#"))
    for pattern in GPU_ONLY:
        body = re.sub(pattern, "<varies>", body)
    return body.strip()


def test_gpu_variant_differs_only_in_instance_kind_and_batching():
    cpu = (MODEL_DIR / "config.pbtxt").read_text()
    gpu = (MODEL_DIR / "configs" / "gpu.pbtxt").read_text()
    assert "kind: KIND_CPU" in cpu and "kind: KIND_GPU" in gpu
    assert _body(cpu) == _body(gpu)


def test_encoding_parameters_match_the_shipped_weights():
    card = json.loads((MODEL_DIR / "1" / "training.json").read_text())
    config = (MODEL_DIR / "config.pbtxt").read_text()
    assert f'key: "input_size" value: {{ string_value: "{card["config"]["size"]}" }}' in config
    assert f'dims: [ {card["config"]["in_channels"]}, -1, -1 ]' in config
    assert (MODEL_DIR / "1" / "model.pt").stat().st_size > 100_000
    assert card["train_command"] and card["validation"]["noc90"] > 0


def test_set_parameter_refuses_a_missing_key():
    text = 'parameters: { key: "a" value: { string_value: "1" } }'
    assert set_parameter(text, "a", "2") == 'parameters: { key: "a" value: { string_value: "2" } }'
    with pytest.raises(ValueError):
        set_parameter(text, "b", "2")
