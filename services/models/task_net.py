"""The small segmentation task model of the active-learning benchmark, shared with the example Triton
task model (``services/selection/export_task_model.py``) and the project task models the training wing
trains (``services/training/task_model.py``), so all run the same network."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


class TinySegNet(nn.Module):
    """A 3-level encoder-decoder (~6k parameters at width 8) with spatial dropout for MC-dropout members.
    ``forward(x [N, 3, H, W] in [0, 1]) -> (logits [N, classes, H, W], embedding [N, 2 * width])``; two
    classes (background, object) for the benchmark, background + a project's labels for the training wing."""

    def __init__(self, width: int = 8, classes: int = 2) -> None:
        super().__init__()
        block = lambda i, o, s=1: nn.Sequential(nn.Conv2d(i, o, 3, s, 1), nn.BatchNorm2d(o), nn.ReLU())  # noqa: E731
        self.enc1, self.enc2, self.enc3 = block(5, width), block(width, 2 * width, 2), block(2 * width, 2 * width, 2)
        self.drop = nn.Dropout2d(0.2)
        self.dec = block(4 * width, width)
        self.head = nn.Conv2d(2 * width, classes, 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        n, _, h, w = x.shape  # + two coordinate channels: a centre prior is easy to learn
        ys = torch.linspace(-1, 1, h).view(1, 1, h, 1).expand(n, 1, h, w)
        xs = torch.linspace(-1, 1, w).view(1, 1, 1, w).expand(n, 1, h, w)
        f1 = self.enc1(torch.cat([x, ys, xs], 1))
        f2 = self.enc2(f1)
        f3 = self.drop(self.enc3(f2))
        up = F.interpolate(f3, size=f2.shape[2:], mode="bilinear", align_corners=False)
        d = self.dec(torch.cat([up, f2], 1))
        d = F.interpolate(d, size=f1.shape[2:], mode="bilinear", align_corners=False)
        return self.head(torch.cat([d, f1], 1)), f3.mean(dim=(2, 3))
