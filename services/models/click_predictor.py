"""Clicks -> probability map: ``encoding.prepare`` -> network -> ``encoding.restore`` -> an optional
refinement (the segmentation service passes ``models.grabcut.refine``, GrabCut seeded by the
network's probability, because it measurably helps; training validation selects the network alone).

The network is a callable on a batch of encoded crops. The deployed service passes one that calls
Triton (``triton_client.TritonNetwork``); training-time validation and offline evaluation pass the
local PyTorch module (``torch_network``). Both run exactly this code around it.

A *pipeline* model (``EncodingConfig.pipeline``; the pretrained network, ``click_pipeline``) runs all of
this, and its focus pass, itself: the predictor hands it the image, the clicks and the previous map
(``network.segment``) and applies no refinement of its own, since all per-click compute runs in Triton.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from services.common.clicks import Click, Segmenter
from services.models import click_encoding as encoding

# (N, C, S, S) float32 click encodings -> (N, 1, S, S) float32 object probabilities.
Network = Callable[[np.ndarray], np.ndarray]
# (RGB image, probability, clicks) -> refined probability, all at image size.
Refiner = Callable[[np.ndarray, np.ndarray, Sequence[Click]], np.ndarray]
# (RGB image, clicks, previous probability or None) -> (probability, the network's own before the model's
# refinement), at image size: a pipeline model.
PipelineNetwork = Callable[[np.ndarray, Sequence[Click], "np.ndarray | None"], tuple[np.ndarray, np.ndarray]]


@dataclass(frozen=True)
class EncodingConfig:
    """How clicks are encoded for one trained network (stored with its weights)."""

    size: int = encoding.INPUT_SIZE
    radius: float = encoding.RADIUS
    with_prior: bool = True
    pipeline: bool = False  # the model takes image, clicks and previous map (``network.segment``)
    network_output: bool = False  # a pipeline model also returns its network's map before its refinement

    @property
    def in_channels(self) -> int:
        return 7 if self.with_prior else 6


def torch_network(model) -> Network:
    """In-process network for training and offline tools (never used by the service)."""
    import torch

    def run(batch: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return torch.sigmoid(model(torch.from_numpy(batch))).numpy()

    return run


class Predictor:
    def __init__(self, network: Network, config: EncodingConfig, refine: Refiner | None = None) -> None:
        self.network = network
        self.config = config
        # A pipeline model's refinement, if any, runs inside it (Triton), never in the caller's process.
        self.refine = None if config.pipeline else refine

    @classmethod
    def from_model(cls, model, config: dict, refine: Refiner | None = None) -> "Predictor":
        encoding_config = EncodingConfig(
            size=config.get("size", encoding.INPUT_SIZE),
            radius=config.get("radius", encoding.RADIUS),
            with_prior=model.in_channels == 7,
        )
        return cls(torch_network(model.eval()), encoding_config, refine)

    def predict(
        self,
        image: np.ndarray,
        clicks: Sequence[Click],
        prev_prob: np.ndarray | None,
        timings: dict | None = None,
    ) -> np.ndarray:
        """Object probability (H, W) for an RGB uint8 image, its clicks and the previous probability.

        ``timings``, when given, receives ``model_ms``: the time of the network call alone.
        """
        return self.predict_with_network(image, clicks, prev_prob, timings)[0]

    def predict_with_network(
        self,
        image: np.ndarray,
        clicks: Sequence[Click],
        prev_prob: np.ndarray | None,
        timings: dict | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """``predict``'s map and the network's own probability before the refinement (the same map
        when refinement is off): the refined map is near binary, so confidence is read off the
        network's."""
        c = self.config
        if c.pipeline:
            start = time.perf_counter()
            prob, network_prob = self.network.segment(image, clicks, prev_prob)
            if timings is not None:
                timings["model_ms"] = (time.perf_counter() - start) * 1000
            return prob, network_prob
        x, crop = encoding.prepare(image, clicks, prev_prob, c.size, c.radius, c.with_prior)
        start = time.perf_counter()
        prob = self.network(x[None])[0, 0]
        if timings is not None:
            timings["model_ms"] = (time.perf_counter() - start) * 1000
        prob = encoding.restore(prob, crop, image.shape[:2], prev_prob)
        return (prob if self.refine is None else self.refine(image, prob, clicks)), prob

    def segmenter(self, image: np.ndarray) -> Segmenter:
        return lambda clicks, prev: self.predict(image, clicks, prev)
