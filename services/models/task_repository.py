"""A task model (``task_net.TinySegNet``) in a Triton model repository: the folder layout both the
selection example (``services/selection/export_task_model.py``: one model, version 1) and the training
wing (``services/training/publishing.py``: a project's task model, a new numbered version per promotion)
write.

A model folder holds ``config.pbtxt`` (the example's, ``deploy/triton/examples/selection-task-model``, with
the number of classes and optionally the versions Triton serves) and one folder per version with the
example's Python-backend ``model.py`` and the network as TorchScript ``model.pt``. Files are written
beside their final name and renamed into place, so Triton never reads a half-written version or config.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from services.common.settings import REPO_ROOT

if TYPE_CHECKING:
    import torch

EXAMPLE = REPO_ROOT / "deploy" / "triton" / "examples" / "selection-task-model"
_PROBABILITY_DIMS = re.compile(r"(name: \"PROBABILITIES\".*?dims: \[ -1, )2(, -1, -1 \])", re.DOTALL)


def build_network(seed: int = 0, weights: Path | dict | None = None, width: int = 8,
                  classes: int = 2) -> torch.jit.ScriptModule:
    """TinySegNet as TorchScript in eval mode: seeded initial weights, or a state dict (a path or the dict)."""
    import torch  # noqa: PLC0415 - writing a repository from saved TorchScript files needs no torch

    from services.models.task_net import TinySegNet  # noqa: PLC0415

    torch.manual_seed(seed)
    net = TinySegNet(width, classes)
    if weights is not None:
        state = weights if isinstance(weights, dict) else torch.load(weights, map_location="cpu", weights_only=True)
        net.load_state_dict(state)
    return torch.jit.script(net.eval())


def model_config(classes: int = 2, versions: list[int] | None = None) -> str:
    """The example's config.pbtxt for ``classes`` output classes; ``versions``: serve exactly these
    (``version_policy: specific``), None: Triton's default policy (the latest version)."""
    text = (EXAMPLE / "config.pbtxt").read_text()
    text, found = _PROBABILITY_DIMS.subn(rf"\g<1>{int(classes)}\g<2>", text)
    if found != 1:
        raise RuntimeError(f"{EXAMPLE / 'config.pbtxt'}: no PROBABILITIES dims [ -1, 2, -1, -1 ] to set")
    if versions:
        listed = ", ".join(str(int(v)) for v in versions)
        text += f"# The versions Triton serves (the training wing's current one).\n" \
                f"version_policy: {{ specific: {{ versions: [ {listed} ] }} }}\n"
    return text


def _write_atomically(path: Path, data: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", dir=path.parent, prefix=f".{path.name}.", delete=False) as tmp:
        tmp.write(data)
    os.replace(tmp.name, path)


def write_config(model_dir: Path, classes: int = 2, versions: list[int] | None = None) -> Path:
    path = Path(model_dir) / "config.pbtxt"
    _write_atomically(path, model_config(classes, versions))
    return path


def write_version(model_dir: Path, version: int, network: torch.jit.ScriptModule | Path) -> Path:
    """``model_dir/<version>/`` with the Python-backend ``model.py`` and ``network`` (a TorchScript module,
    or the file one was saved to) as ``model.pt``, replacing that version if present."""
    if version < 1:
        raise ValueError("Triton versions start at 1")
    model_dir = Path(model_dir)
    model_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=model_dir, prefix=f".{version}."))
    shutil.copy(EXAMPLE / "1" / "model.py", staging / "model.py")
    if isinstance(network, Path):
        shutil.copy(network, staging / "model.pt")
    else:
        network.save(str(staging / "model.pt"))
    target = model_dir / str(version)
    if target.exists():
        shutil.rmtree(target)
    os.replace(staging, target)
    return target
