"""Export a training checkpoint into the Triton model repository.

    python -m services.segmentation.export --checkpoint var/train/clickseg-w2/best.pt

writes ``deploy/triton/models/clickseg/1/model.pt`` (TorchScript), ``1/training.json`` (the command,
config and validation figures of the checkpoint) and sets the encoding parameters of both model
configs (``input_size``, ``click_radius``, ``colour_prior``) to the checkpoint's, so the service
encodes clicks exactly as the network was trained.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import torch
import typer

from services.common.settings import REPO_ROOT
from services.models.click_net import export_torchscript, load

MODEL_DIR = REPO_ROOT / "deploy" / "triton" / "models" / "clickseg"

app = typer.Typer(add_completion=False)


def set_parameter(config_text: str, key: str, value: str) -> str:
    pattern = re.compile(r'(parameters: \{ key: "%s" value: \{ string_value: ")[^"]*(" \} \})' % key)
    if not pattern.search(config_text):
        raise ValueError(f"parameter {key!r} missing from the model config")
    return pattern.sub(lambda m: m.group(1) + value + m.group(2), config_text)


def export(checkpoint: Path, model_dir: Path = MODEL_DIR, version: int = 1) -> Path:
    model, config = load(checkpoint)
    target = export_torchscript(model, model_dir / str(version) / "model.pt", config.get("size", 192))
    state = torch.load(checkpoint, map_location="cpu", weights_only=False)
    figures_path = Path(checkpoint).parent / "figures.json"
    figures = json.loads(figures_path.read_text()) if figures_path.exists() else {}
    card = {
        "checkpoint": Path(checkpoint).name,
        "config": config,
        "iterations": figures.get("iterations", state.get("iteration")),
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
        text = re.sub(r"dims: \[ \d+, -1, -1 \]", f"dims: [ {config.get('in_channels', 7)}, -1, -1 ]",
                      text, count=1)
        path.write_text(text)
    return target


@app.command()
def main(
    checkpoint: Path = typer.Option(..., exists=True, help="best.pt or last.pt written by training"),
    model_dir: Path = typer.Option(MODEL_DIR, help="the model's folder in the Triton repository"),
    version: int = typer.Option(1, min=1),
) -> None:
    target = export(checkpoint, model_dir, version)
    typer.echo(f"wrote {target} ({target.stat().st_size / 1e6:.2f} MB)")


if __name__ == "__main__":
    app()
