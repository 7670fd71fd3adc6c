"""Export a training checkpoint into the Triton model repository.

    python -m services.segmentation.export --checkpoint var/train/clickseg-w2/best.pt

writes ``deploy/triton/models/clickseg/1/model.pt`` (TorchScript), ``1/training.json`` (the command,
config and validation figures of the checkpoint) and sets the encoding parameters of both model
configs (``input_size``, ``click_radius``, ``colour_prior``) to the checkpoint's, so the service
encodes clicks exactly as the network was trained.

A checkpoint of the pretrained network (``arch`` ``effnet_lite0``) goes to the ``clickseg_lite0`` model
(``deploy/triton/models``, served by default; a ``deploy/triton/candidates`` folder of that name would be
one not yet promoted) as the TorchScript of its whole per-click pipeline
(``services/models/click_pipeline.py``).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import torch
import typer

from services.common.settings import REPO_ROOT, served_model_dir
from services.models.click_models import export_served, is_pipeline, load
from services.models.click_repository import set_parameter

MODEL_DIR = served_model_dir("clickseg")
CANDIDATES = REPO_ROOT / "deploy" / "triton" / "candidates"


def lite0_model_dir() -> Path:
    """The pretrained network's model folder: the served one unless only a candidate exists."""
    served = MODEL_DIR.parent / "clickseg_lite0"
    return served if served.exists() else CANDIDATES / "clickseg_lite0"

app = typer.Typer(add_completion=False)


def export(checkpoint: Path, model_dir: Path | None = None, version: int = 1) -> Path:
    model, config = load(checkpoint)
    pipeline = is_pipeline(config)
    model_dir = model_dir or (lite0_model_dir() if pipeline else MODEL_DIR)
    target = export_served(model, config, model_dir / str(version) / "model.pt")
    state = torch.load(checkpoint, map_location="cpu", weights_only=False)
    figures_path = Path(checkpoint).parent / "figures.json"
    figures = json.loads(figures_path.read_text()) if figures_path.exists() else {}
    card = {
        "checkpoint": Path(checkpoint).name,
        "config": config,
        # the checkpoint's own iteration (best.pt: the one validation chose) beside the run's total
        "iteration": (figures.get("best") or {}).get("iteration", state.get("iteration")),
        "run_iterations": figures.get("iterations", state.get("iteration")),
        "train_command": figures.get("command"),
        "wall_time_s": figures.get("wall_time_s"),
        "validation": figures.get("best"),
        "val_stems": figures.get("val_stems"),
    }
    (model_dir / str(version) / "training.json").write_text(json.dumps(card, indent=1) + "\n")
    params = {
        "input_size": str(config.get("size", 192)),
        "click_radius": str(config.get("radius", 5)),
        "colour_prior": "true" if config.get("in_channels", 7) == 7 else "false",
    }
    for path in [model_dir / "config.pbtxt", *sorted((model_dir / "configs").glob("*.pbtxt"))]:
        text = path.read_text()
        for key, value in params.items():
            text = set_parameter(text, key, value)
        if not pipeline:  # the click encoding's channels are the input's first dimension
            text = re.sub(r"dims: \[ \d+, -1, -1 \]", f"dims: [ {config.get('in_channels', 7)}, -1, -1 ]",
                          text, count=1)
        path.write_text(text)
    return target


def repository_with_candidates(target: Path, candidates: dict[str, Path] | None = None) -> Path:
    """A Triton model repository at ``target``: links to every served model plus the candidates
    (name -> folder; default: every candidate with exported weights), for measuring a candidate
    end to end without serving it. A candidate named like a served model replaces it."""
    if candidates is None:
        candidates = {p.name: p for p in sorted(CANDIDATES.iterdir())
                      if (p / "config.pbtxt").exists() and (p / "1" / "model.pt").exists()}
    served = {p.name: p for p in sorted(MODEL_DIR.parent.iterdir()) if (p / "config.pbtxt").exists()}
    target.mkdir(parents=True, exist_ok=True)
    for name, folder in {**served, **candidates}.items():
        (target / name).symlink_to(Path(folder).resolve(), target_is_directory=True)
    return target


@app.command()
def main(
    checkpoint: Path = typer.Option(..., exists=True, help="best.pt or last.pt written by training"),
    model_dir: Path = typer.Option(None, help="the model's folder in the Triton repository (default: "
                                   "clickseg, or clickseg_lite0 for the pretrained network)"),
    version: int = typer.Option(1, min=1),
) -> None:
    target = export(checkpoint, model_dir, version)
    typer.echo(f"wrote {target} ({target.stat().st_size / 1e6:.2f} MB)")


if __name__ == "__main__":
    app()
