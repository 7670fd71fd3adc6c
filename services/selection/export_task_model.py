"""Build a Triton model repository holding the example selection task model.

    python -m services.selection.export_task_model --out var/triton/task-models

writes ``OUT/<name>/config.pbtxt`` and ``OUT/<name>/1/model.py`` (copied from
``deploy/triton/examples/selection-task-model``) and ``OUT/<name>/1/model.pt``: the benchmark's
``TinySegNet`` as TorchScript, seeded (same seed, same weights), or with ``--weights`` a state dict
trained elsewhere. Serve it with ``TRITON_MODEL_REPOSITORY=OUT deploy/local/tritonserver.sh`` and
name it in ``StartScoring.triton_model``.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import torch
import typer

from services.common.settings import REPO_ROOT
from services.models.task_net import TinySegNet

EXAMPLE = REPO_ROOT / "deploy" / "triton" / "examples" / "selection-task-model"

app = typer.Typer(add_completion=False)


def build_network(seed: int = 0, weights: Path | None = None, width: int = 8) -> torch.jit.ScriptModule:
    torch.manual_seed(seed)
    net = TinySegNet(width)
    if weights is not None:
        net.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
    return torch.jit.script(net.eval())


def export(out: Path, name: str = "selection_task", seed: int = 0, weights: Path | None = None) -> Path:
    """The model's folder ``out / name``, replaced if present."""
    target = Path(out) / name
    if target.exists():
        shutil.rmtree(target)
    (target / "1").mkdir(parents=True)
    shutil.copy(EXAMPLE / "config.pbtxt", target / "config.pbtxt")
    shutil.copy(EXAMPLE / "1" / "model.py", target / "1" / "model.py")
    build_network(seed, weights).save(str(target / "1" / "model.pt"))
    return target


@app.command()
def main(out: Path = typer.Option(..., help="model repository folder (created)"),
         name: str = typer.Option("selection_task", help="model name: its folder in OUT"),
         seed: int = typer.Option(0, help="initialisation seed when no --weights"),
         weights: Path = typer.Option(None, help="TinySegNet state dict (torch.save(model.state_dict()))")) -> None:
    typer.echo(export(out, name, seed, weights))


if __name__ == "__main__":
    app()
