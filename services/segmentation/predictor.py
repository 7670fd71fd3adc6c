"""Local (in-process) inference with a trained checkpoint: for training-time validation and offline
evaluation. The deployed service does the same steps with the network in Triton instead:
``encoding.prepare`` -> network -> sigmoid -> ``encoding.restore`` -> ``classic.refine`` (GrabCut seeded
by the network's probability; on by default because it measurably helps, see the training figures)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from services.segmentation import classic, encoding
from services.segmentation.model import ClickSegNet, load
from services.simulation.clicker import Click
from services.simulation.protocol import Segmenter


class Predictor:
    def __init__(self, model: ClickSegNet, config: dict, refine: bool = True) -> None:
        self.model = model.eval()
        self.refine = refine
        self.size = config.get("size", encoding.INPUT_SIZE)
        self.radius = config.get("radius", encoding.RADIUS)
        self.with_prior = model.in_channels == 7

    @classmethod
    def from_checkpoint(cls, checkpoint: str | Path, refine: bool = True) -> "Predictor":
        return cls(*load(checkpoint), refine=refine)

    @torch.no_grad()
    def predict(
        self, image: np.ndarray, clicks: Sequence[Click], prev_prob: np.ndarray | None
    ) -> np.ndarray:
        """Object probability (H, W) for an RGB uint8 image, its clicks and the previous probability."""
        x, crop = encoding.prepare(image, clicks, prev_prob, self.size, self.radius, self.with_prior)
        prob = torch.sigmoid(self.model(torch.from_numpy(x)[None]))[0, 0].numpy()
        prob = encoding.restore(prob, crop, image.shape[:2], prev_prob)
        return classic.refine(image, prob, clicks) if self.refine else prob

    def segmenter(self, image: np.ndarray) -> Segmenter:
        return lambda clicks, prev: self.predict(image, clicks, prev)
