"""The project's interactive network: the served click network fine-tuned on the project's masks.

Plain code (no grpc, no celery); progress is a callback. The training itself is the platform's click
training (``services/models/click_training.py``), not a copy of it:

- ``load_base``: the served network (the default ``clickseg_lite0``, the whole per-click pipeline around
  the pretrained network, or ``clickseg``, the network alone: TorchScript in the Triton model folder and
  its ``training.json`` card, whose config says how it was trained and how clicks are encoded).
- ``build_samples``: one ``click_dataset.Sample`` per annotation of a snapshot split (image read by URI,
  the mask as 0/255); pseudo-labels are trained on, never evaluated on.
- ``fine_tune``: ``click_training.train_step`` (augmented crops, initial clicks, corrective clicks of the
  standard clicker on the network's own prediction, loss on the last step) for ``iterations`` steps of
  AdamW, batch-norm statistics frozen (a project gives batches of a few crops, too few to re-estimate
  them). A checkpoint (weights, optimiser, iteration, the random generator's state) is written atomically
  every ``checkpoint_every`` iterations, so a resumed job continues where it stopped.
- ``noc_figures``: NoC@85/90 with the standard clicker on the held-out annotations, exactly as click
  training validates (``click_training.validate``: the network alone, 20 clicks at most).
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import torch
from torch import nn

from services.common.errors import FailedPrecondition
from services.common.image_files import load_image
from services.common.masks import decode_rle
from services.models import click_models, click_pipeline, click_training
from services.models.click_dataset import Sample
from services.training.job_config import InteractiveConfig
from services.training.snapshots import Entry

Progress = Callable[[int, int, str], None]


def load_base(model_dir: Path) -> tuple[nn.Module, dict]:
    """The served click network of a Triton model folder (``<dir>/1/model.pt`` and ``training.json``)."""
    version = Path(model_dir) / "1"
    card_path = version / "training.json"
    if not card_path.is_file():
        raise FailedPrecondition(f"the base click network has no training card at {card_path}", field="kind")
    config = dict(json.loads(card_path.read_text())["config"])
    if config.get("arch", "click_net") not in click_models.ARCHES:
        raise FailedPrecondition(f"the base click network's arch {config['arch']!r} is not one training knows "
                                 f"({', '.join(click_models.ARCHES)})", field="kind")
    return click_models.load_served(version / "model.pt", config), config


def load_version(weights: Path) -> tuple[nn.Module, dict]:
    """A fine-tuned version's weights (the format of click training's checkpoints)."""
    return click_models.load(weights)


def build_samples(entries: list[Entry], heldout: bool,
                  load: Callable[[str], np.ndarray | None] = load_image) -> tuple[list[Sample], list[str]]:
    """(samples, unreadable image ids) of one split: one sample per annotation, its mask 0/255."""
    samples, unreadable, images = [], [], {}
    for e in entries:
        if e.heldout != heldout or (heldout and e.pseudo_label):
            continue
        if e.uri not in images:
            images[e.uri] = load(e.uri)
        pixels = images[e.uri]
        if pixels is None or pixels.shape[:2] != (e.height, e.width):
            unreadable.append(e.image_id)
            continue
        mask = decode_rle([e.height, e.width], e.mask_counts, (e.height, e.width),
                          f"snapshot entry {e.annotation_id} mask")
        samples.append(Sample(e.annotation_id, pixels, mask.astype(np.uint8) * 255))
    return samples, sorted(set(unreadable))


def _save_atomically(state: dict, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=path.parent, prefix=f".{path.name}.", delete=False) as tmp:
        torch.save(state, tmp)
    os.replace(tmp.name, path)


def resolved(config: InteractiveConfig, base_config: dict) -> InteractiveConfig:
    """``config`` with its defaults that depend on the base filled in: crop size 0 -> the base's ``size``."""
    return replace(config, crop_size=config.crop_size or int(base_config["size"]))


def training_cfg(base_config: dict, config: InteractiveConfig) -> dict:
    """``click_training``'s configuration: the base network's, with the job's sizes (serving keeps the
    base's encoding, which ``base_config`` gives ``noc_figures`` and the published model)."""
    augmentation = {"focus_p": 0.15, "paste_p": 0.25, "occlude_p": 0.15}  # click_training's defaults
    config = resolved(config, base_config)
    return {**augmentation, **base_config, "size": config.crop_size, "batch": config.batch_size,
            "max_steps": config.max_steps, "lr": config.learning_rate, "seed": config.seed, "channels_last": False}


def parameter_groups(net: nn.Module, base_config: dict, lr: float) -> list[dict]:
    """The base's recipe: a pretrained encoder learns at ``encoder_lr_mult`` times the rate, so a few
    project masks adjust the decoder more than they wear down what ImageNet taught the encoder."""
    if not hasattr(net, "encoder_parameters"):
        return [{"params": list(net.parameters()), "lr": lr}]
    return [{"params": net.encoder_parameters(), "lr": lr * float(base_config.get("encoder_lr_mult", 1.0))},
            {"params": net.decoder_parameters(), "lr": lr}]


def _freeze_batch_norm(net: nn.Module) -> None:
    for module in net.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.eval()


def fine_tune(net: nn.Module, base_config: dict, samples: list[Sample], config: InteractiveConfig,
              checkpoint: Path | None = None, progress: Progress = lambda done, total, message: None) -> nn.Module:
    """``net`` fine-tuned in place (eval mode on return); resumes from ``checkpoint`` when it holds this
    job's state."""
    if not samples:
        raise ValueError("no training annotations")
    cfg = training_cfg(base_config, config)
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    optimiser = torch.optim.AdamW(parameter_groups(net, base_config, config.learning_rate), weight_decay=1e-4)
    # the optimiser's groups too: a checkpoint from before the encoder had a group of its own cannot resume
    fingerprint = {"config": asdict(config), "samples": [s.stem for s in samples],
                   "groups": len(optimiser.param_groups)}
    start = 0
    if checkpoint is not None and checkpoint.is_file():
        state = torch.load(checkpoint, map_location="cpu", weights_only=False)
        if state.get("fingerprint") == fingerprint:
            net.load_state_dict(state["model"])
            optimiser.load_state_dict(state["optimizer"])
            rng.bit_generator.state = state["rng"]
            start = int(state["iteration"])
    every, reported = max(1, config.iterations // 100), time.monotonic()
    for iteration in range(start, config.iterations):
        net.train()
        _freeze_batch_norm(net)
        loss = click_training.train_step(net, optimiser, samples, cfg, rng)
        done = iteration + 1
        if checkpoint is not None and (done % config.checkpoint_every == 0 or done == config.iterations):
            _save_atomically({"model": net.state_dict(), "optimizer": optimiser.state_dict(), "iteration": done,
                              "rng": rng.bit_generator.state, "fingerprint": fingerprint}, checkpoint)
        if done % every == 0 or done == config.iterations or time.monotonic() - reported >= 1.0:
            reported = time.monotonic()
            progress(done, config.iterations, f"iteration {done}/{config.iterations}, loss {loss:.3f}")
    return net.eval()


def noc_figures(net: nn.Module, base_config: dict, samples: list[Sample]) -> dict[str, float]:
    """NoC@85 and NoC@90 (mean clicks of the standard clicker to reach the IoU, 20 when never), the objects
    that never reach 90%, mIoU after the first click, the number of held-out objects."""
    summary = click_training.validate(net, base_config, samples)
    net.eval()
    return {"noc85": float(summary["noc85"]), "noc90": float(summary["noc90"]),
            "failed90": float(summary["failed90"]), "miou_at_1": float(summary["miou_at"][0]),
            "heldout_objects": float(summary["images"])}


def save(net: nn.Module, base_config: dict, weights: Path, scripted: Path) -> None:
    """The weights (click training's checkpoint format, so ``click_models.load`` reads them) and the
    TorchScript Triton runs, shaped like the base's (written first: a weights file means both are complete)."""
    staging = scripted.with_name(f".{scripted.name}.tmp")
    click_models.export_served(net.eval(), base_config, staging)
    onnx = click_pipeline.network_onnx_path(staging)  # a pipeline's network graph, written beside it
    if onnx.exists():
        os.replace(onnx, click_pipeline.network_onnx_path(scripted))
    os.replace(staging, scripted)
    _save_atomically({"model": net.state_dict(), "config": base_config}, weights)
