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

import typer

from services.models.task_repository import build_network, write_config, write_version

app = typer.Typer(add_completion=False)


def export(out: Path, name: str = "selection_task", seed: int = 0, weights: Path | None = None) -> Path:
    """The model's folder ``out / name``, replaced if present (the layout of ``services/models/task_repository.py``)."""
    target = Path(out) / name
    if target.exists():
        shutil.rmtree(target)
    write_config(target)
    write_version(target, 1, build_network(seed, weights))
    return target


@app.command()
def main(out: Path = typer.Option(..., help="model repository folder (created)"),
         name: str = typer.Option("selection_task", help="model name: its folder in OUT"),
         seed: int = typer.Option(0, help="initialisation seed when no --weights"),
         weights: Path = typer.Option(None, help="TinySegNet state dict (torch.save(model.state_dict()))")) -> None:
    typer.echo(export(out, name, seed, weights))


if __name__ == "__main__":
    app()
