"""The click networks by name: training, export and offline evaluation build and load them here.

``arch`` in a checkpoint's config picks the network: ``click_net`` (from scratch, the first shipped
model; the default for checkpoints written before there was a choice) or ``effnet_lite0``
(``effnet_click_net``: the ImageNet-pretrained encoder).
"""

from __future__ import annotations

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
