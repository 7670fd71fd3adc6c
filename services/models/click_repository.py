"""A fine-tuned click network in a Triton model repository, shaped like the served base model it came from.

The training wing publishes a project's interactive network as a model of its own (a new numbered version
per promotion) beside the base ``clickseg``: the base folder's ``config.pbtxt`` (and ``configs/*.pbtxt``,
the GPU variant) with the model's name and the versions to serve, and per version the base's Python-backend
``model.py`` with the fine-tuned TorchScript as ``model.pt``. The config keeps the base's encoding
parameters (``input_size``, ``click_radius``, ``colour_prior``), which the fine-tuned network was trained
with, so a client encodes clicks for it exactly as for the base. Files are written beside their final name
and renamed into place: Triton never reads half of a version or config.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from pathlib import Path

_NAME = re.compile(r'^name: "[^"]*"\s*$', re.MULTILINE)
_POLICY = re.compile(r"^version_policy:.*$", re.MULTILINE)
_PARAMETER = re.compile(r'^parameters: \{ key: "([^"]+)" value: \{ string_value: "([^"]*)" \} \}', re.MULTILINE)


def parameters(config_text: str) -> dict[str, str]:
    """A model config's ``parameters`` (key -> string value), as the Python backend reads them."""
    return dict(_PARAMETER.findall(config_text))


def pipeline_refinement(params: dict[str, str]) -> str | None:
    """What refines a pipeline click model's map inside Triton (its ``refine`` parameter, none or grabcut, read
    as its model.py reads it); None for a model that is not a pipeline (``interface``), whose map the
    segmentation service refines."""
    if params.get("interface") != "pipeline":
        return None
    refine = params.get("refine", "none").lower()
    if refine not in ("none", "grabcut"):
        raise ValueError(f"parameter refine must be none or grabcut, got {refine!r}")
    return refine


def set_parameter(config_text: str, key: str, value: str) -> str:
    """``config_text`` with the parameter ``key`` set to ``value``; ValueError when it has no such line."""
    found = False

    def swap(match: re.Match) -> str:
        nonlocal found
        if match.group(1) != key:
            return match.group(0)
        found = True
        line, start = match.group(0), match.start(0)
        return line[:match.start(2) - start] + value + line[match.end(2) - start:]

    text = _PARAMETER.sub(swap, config_text)
    if not found:
        raise ValueError(f"parameter {key!r} missing from the model config")
    return text


def model_config(base_text: str, name: str, versions: list[int] | None = None) -> str:
    """The base's config text renamed ``name``; ``versions``: serve exactly these (``specific``)."""
    text, found = _NAME.subn(f'name: "{name}"', base_text)
    if found == 0:
        text = f'name: "{name}"\n' + text
    text = _POLICY.sub("", text)
    if versions:
        listed = ", ".join(str(int(v)) for v in versions)
        text = text.rstrip("\n") + "\n# The versions Triton serves (the training wing's current one).\n" \
            f"version_policy: {{ specific: {{ versions: [ {listed} ] }} }}\n"
    return text


def _write_atomically(path: Path, data: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", dir=path.parent, prefix=f".{path.name}.", delete=False) as tmp:
        tmp.write(data)
    os.replace(tmp.name, path)


def write_config(model_dir: Path, base_dir: Path, versions: list[int] | None = None) -> Path:
    """``model_dir/config.pbtxt`` (and its ``configs/`` variants) from ``base_dir``'s, named after the folder."""
    model_dir, base_dir = Path(model_dir), Path(base_dir)
    for base in sorted((base_dir / "configs").glob("*.pbtxt")):
        _write_atomically(model_dir / "configs" / base.name, model_config(base.read_text(), model_dir.name, versions))
    path = model_dir / "config.pbtxt"
    _write_atomically(path, model_config((base_dir / "config.pbtxt").read_text(), model_dir.name, versions))
    return path


def write_version(model_dir: Path, version: int, scripted: Path, base_dir: Path) -> Path:
    """``model_dir/<version>/`` with the base's ``model.py``, ``scripted`` as ``model.pt`` and the network's
    ONNX graph beside ``scripted`` (same name, ``.onnx``: a pipeline's export writes it) as ``model.onnx``."""
    if version < 1:
        raise ValueError("Triton versions start at 1")
    model_dir = Path(model_dir)
    model_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=model_dir, prefix=f".{version}."))
    shutil.copy(Path(base_dir) / "1" / "model.py", staging / "model.py")
    shutil.copy(scripted, staging / "model.pt")
    if Path(scripted).with_suffix(".onnx").exists():
        shutil.copy(Path(scripted).with_suffix(".onnx"), staging / "model.onnx")
    target = model_dir / str(version)
    if target.exists():
        shutil.rmtree(target)
    os.replace(staging, target)
    return target
