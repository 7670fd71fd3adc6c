"""The click-conditioned segmentation network: a compact depthwise-separable encoder-decoder.

Input (N, C, H, W) with C = 6 (RGB, positive disks, negative disks, previous probability) or 7 (plus
the colour prior); output (N, 1, H, W) logits. Any H, W works (padded internally to a multiple of 16).
"""

from __future__ import annotations

import warnings
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn


class SeparableBlock(nn.Module):
    """Depthwise 3x3 (optionally strided / dilated) + pointwise 1x1, residual when shapes allow."""

    def __init__(self, cin: int, cout: int, stride: int = 1, dilation: int = 1) -> None:
        super().__init__()
        self.depthwise = nn.Conv2d(
            cin, cin, 3, stride, padding=dilation, dilation=dilation, groups=cin, bias=False
        )
        self.bn1 = nn.BatchNorm2d(cin)
        self.pointwise = nn.Conv2d(cin, cout, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.bn2(self.pointwise(F.relu(self.bn1(self.depthwise(x)))))
        return F.relu(y + x if self.residual else y)


def _pointwise(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU())


class ClickSegNet(nn.Module):
    def __init__(self, in_channels: int = 7, width: int = 1) -> None:
        super().__init__()
        c1, c2, c3, c4 = 24 * width, 40 * width, 64 * width, 96 * width
        self.in_channels = in_channels
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, c1, 3, 2, 1, bias=False), nn.BatchNorm2d(c1), nn.ReLU(),
            SeparableBlock(c1, c1),
        )
        self.enc4 = nn.Sequential(SeparableBlock(c1, c2, 2), SeparableBlock(c2, c2))
        self.enc8 = nn.Sequential(SeparableBlock(c2, c3, 2), SeparableBlock(c3, c3), SeparableBlock(c3, c3))
        self.enc16 = nn.Sequential(
            SeparableBlock(c3, c4, 2), SeparableBlock(c4, c4, dilation=2),
            SeparableBlock(c4, c4, dilation=4), SeparableBlock(c4, c4, dilation=8),
        )
        self.context = _pointwise(c4, c4)
        self.fuse8 = nn.Sequential(_pointwise(c4 + c3, c3), SeparableBlock(c3, c3))
        self.fuse4 = nn.Sequential(_pointwise(c3 + c2, 48), SeparableBlock(48, 48))
        self.fuse2 = nn.Sequential(_pointwise(48 + c1 + in_channels, 32), SeparableBlock(32, 32))
        self.head = nn.Conv2d(32, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        height, width = x.shape[-2:]
        pad_h, pad_w = (-height) % 16, (-width) % 16
        x = F.pad(x, (0, pad_w, 0, pad_h))
        e2 = self.stem(x)
        e4 = self.enc4(e2)
        e8 = self.enc8(e4)
        e16 = self.enc16(e8)
        e16 = e16 + self.context(F.adaptive_avg_pool2d(e16, 1))
        d8 = self.fuse8(torch.cat([_up(e16, e8), e8], 1))
        d4 = self.fuse4(torch.cat([_up(d8, e4), e4], 1))
        x2 = F.avg_pool2d(x, 2)
        d2 = self.fuse2(torch.cat([_up(d4, e2), e2, x2], 1))
        logits = F.interpolate(self.head(d2), size=x.shape[-2:], mode="bilinear", align_corners=False)
        return logits[..., :height, :width]


def _up(x: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return F.interpolate(x, size=like.shape[-2:], mode="bilinear", align_corners=False)


def build(config: dict | None = None) -> ClickSegNet:
    config = config or {}
    return ClickSegNet(in_channels=config.get("in_channels", 7), width=config.get("width", 1))


def load(checkpoint: str | Path) -> tuple[ClickSegNet, dict]:
    """Load weights written by training (``best.pt`` or ``last.pt``); returns (model in eval mode, config)."""
    state = torch.load(checkpoint, map_location="cpu", weights_only=False)
    model = build(state["config"])
    model.load_state_dict(state["model"])
    return model.eval(), state["config"]


def export_torchscript(model: ClickSegNet, path: str | Path, size: int = 192) -> Path:
    """Trace the network to a TorchScript file (input ``(N, C, H, W)`` float32 -> logits) for serving."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    example = torch.zeros(1, model.in_channels, size, size)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # TorchScript: what Triton's libtorch loads
        traced = torch.jit.trace(model.eval(), example)
    traced.save(str(path))
    return path
