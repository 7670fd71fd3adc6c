"""The click networks by name: training, export and offline evaluation build and load them here.

``arch`` in a checkpoint's config picks the network: ``click_net`` (from scratch, the first shipped
model; the default for checkpoints written before there was a choice) or ``effnet_lite0``
(``effnet_click_net``: the ImageNet-pretrained encoder).
"""

from __future__ import annotations

import warnings
from pathlib import Path

import torch
from torch import nn

ARCHES = ("click_net", "effnet_lite0")


def build(config: dict, pretrained: bool = True) -> nn.Module:
    """A new network for ``config``; ``pretrained`` loads ImageNet weights where the network has them."""
    arch = config.get("arch", "click_net")
    if arch == "click_net":
        from services.models import click_net

        return click_net.build(config)
    if arch == "effnet_lite0":
        from services.models import effnet_click_net

        return effnet_click_net.build(config, pretrained=pretrained)
    raise ValueError(f"unknown click network {arch!r}; known: {', '.join(ARCHES)}")


def load(checkpoint: str | Path) -> tuple[nn.Module, dict]:
    """Weights written by training (``best.pt`` / ``last.pt``): (model in eval mode, config)."""
    state = torch.load(checkpoint, map_location="cpu", weights_only=False)
    model = build(state["config"], pretrained=False)
    model.load_state_dict(state["model"])
    return model.eval(), state["config"]


def is_pipeline(config: dict) -> bool:
    """Whether the network is served as a whole per-click pipeline (``click_pipeline``: the Triton model
    takes the image and the clicks) rather than alone (``click_net``: the service encodes the clicks)."""
    return config.get("arch", "click_net") != "click_net"


def export_served(net: nn.Module, config: dict, path: str | Path) -> Path:
    """The TorchScript a Triton model folder runs (``<version>/model.pt``) for ``net`` trained with ``config``."""
    if is_pipeline(config):
        from services.models import click_pipeline

        return click_pipeline.export(click_pipeline.from_config(net, config), path)
    from services.models.click_net import export_torchscript

    return export_torchscript(net, path, config.get("size", 192))


def load_served(scripted: str | Path, config: dict) -> nn.Module:
    """The trainable network inside a served TorchScript (a pipeline holds it as ``net``), in eval mode."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # TorchScript is what Triton's backend loads
        state = torch.jit.load(str(scripted), map_location="cpu").state_dict()
    if is_pipeline(config):
        state = {key.removeprefix("net."): value for key, value in state.items() if key.startswith("net.")}
    net = build(config, pretrained=False)
    net.load_state_dict(state)
    return net.eval()
