"""Propagation of human labels to every frame of a video by test-time fine-tuning (Qiao et al., WACV 2023).

The platform's earlier click-conditioned network (the shipped weights of ``deploy/triton/models/clickseg``,
small enough to fine-tune per video on CPU; not the served default ``clickseg_lite0``) is used as a mask
refiner, as MaskTrack does: its previous-mask channel gets the current estimate of a frame, the click
channels are empty and the colour-prior channel is 0.5 (what the network saw without positive clicks), and
it outputs that frame's mask. On one video it is fine-tuned with

  (a) BCE + Dice against the human-labelled pixels (whole frames, rectangles, superpixels: any pixel
      set with labels); the prior fed for a labelled frame is the current estimate (partial labels)
      or the label randomly deformed (whole frames), so the network learns to correct estimates;
  (b) temporal consistency: L1 between the prediction of frame t+1 and the prediction of frame t
      warped into t+1 by optical flow, over forward-backward consistent pixels;

then every frame is predicted from its estimate, and human-labelled pixels override the prediction.
BatchNorm statistics stay frozen (a batch of a few frames of one video would corrupt them).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from services.common.settings import served_model_dir
from services.models.click_encoding import MEAN, STD
from services.models.click_net import ClickSegNet, build
from services.video.flow import Flows

SHIPPED_MODEL = served_model_dir("clickseg") / "1" / "model.pt"
Progress = Callable[[int, int, str], None]


def load_network(path: Path = SHIPPED_MODEL) -> ClickSegNet:
    """The eager network with the weights of a TorchScript export (its parameter names are the module's)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # TorchScript is what Triton serves
        state = torch.jit.load(str(path), map_location="cpu").state_dict()
    stem = state["stem.0.weight"]
    model = build({"in_channels": int(stem.shape[1]), "width": int(stem.shape[0]) // 24})
    model.load_state_dict(state)
    return model.eval()


@dataclass
class Labels:
    """Human-labelled pixels of a video: ``known`` says which pixels were labelled, ``value`` the label."""

    known: np.ndarray  # [T, H, W] bool
    value: np.ndarray  # [T, H, W] bool

    @classmethod
    def empty(cls, length: int, height: int, width: int) -> "Labels":
        return cls(np.zeros((length, height, width), bool), np.zeros((length, height, width), bool))

    def add(self, frame: int, pixels: np.ndarray, mask: np.ndarray) -> None:
        """Label ``pixels`` (bool [H, W]) of ``frame`` with ``mask`` (bool [H, W], object = True)."""
        if not 0 <= frame < len(self.known):
            raise ValueError(f"frame {frame} outside 0..{len(self.known) - 1}")
        if pixels.shape != self.known.shape[1:] or mask.shape != pixels.shape:
            raise ValueError(f"sample of shape {pixels.shape} does not match frames {self.known.shape[1:]}")
        self.known[frame] |= pixels
        self.value[frame] = np.where(pixels, mask, self.value[frame])

    def full_frames(self) -> dict[int, np.ndarray]:
        return {int(t): self.value[t] for t in np.flatnonzero(self.known.all(axis=(1, 2)))}

    def paste(self, prob: np.ndarray) -> np.ndarray:
        return np.where(self.known, self.value.astype(np.float32), prob).astype(np.float32)


@dataclass(frozen=True)
class FineTuneConfig:
    steps: int = 40
    lr: float = 3e-4
    temporal_weight: float = 1.0
    frames_per_step: int = 2  # labelled frames in the supervised batch
    pairs_per_step: int = 1  # consecutive pairs in the temporal batch
    seed: int = 0


def deform(mask: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A plausible wrong estimate of ``mask``: small random shift/scale/rotation, dilation or erosion, blur."""
    height, width = mask.shape
    angle, scale = rng.uniform(-6, 6), rng.uniform(0.93, 1.07)
    matrix = cv2.getRotationMatrix2D((width / 2, height / 2), angle, scale)
    matrix[:, 2] += rng.uniform(-0.03, 0.03, 2) * (width, height)
    out = cv2.warpAffine(mask.astype(np.float32), matrix, (width, height), flags=cv2.INTER_LINEAR)
    k = int(rng.integers(1, 4)) * 2 + 1
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k))
    out = cv2.dilate(out, kernel) if rng.random() < 0.5 else cv2.erode(out, kernel)
    return cv2.GaussianBlur(out, (5, 5), 0)


class Propagator:
    """Fine-tunes one copy of the network on one video; call ``propagate`` once per human round."""

    def __init__(self, frames: np.ndarray, flows: Flows, config: FineTuneConfig = FineTuneConfig(),
                 network: ClickSegNet | None = None) -> None:
        self.config = config
        self.net = network if network is not None else load_network()
        self.net.eval()  # frozen BatchNorm statistics; gradients still flow
        self.optimizer = torch.optim.Adam(self.net.parameters(), lr=config.lr)
        self.rng = np.random.default_rng(config.seed)
        torch.manual_seed(config.seed)
        rgb = (frames.astype(np.float32) / 255.0 - MEAN) / STD
        self.rgb = torch.from_numpy(rgb.transpose(0, 3, 1, 2).copy())  # [T, 3, H, W]
        self.length, _, self.height, self.width = self.rgb.shape
        self.flows = flows
        # Sampling grids of the backward flows for grid_sample, and the consistency masks.
        ys, xs = np.mgrid[:self.height, :self.width].astype(np.float32)
        sx = (xs + flows.backward[..., 0]) * 2 / max(1, self.width - 1) - 1
        sy = (ys + flows.backward[..., 1]) * 2 / max(1, self.height - 1) - 1
        self.grids = torch.from_numpy(np.stack([sx, sy], axis=-1))  # [T-1, H, W, 2]
        self.valid = torch.from_numpy(flows.valid_next.astype(np.float32))[:, None]

    def _inputs(self, index: list[int], priors: np.ndarray) -> torch.Tensor:
        n = len(index)
        prior = torch.from_numpy(np.ascontiguousarray(priors, dtype=np.float32))[:, None]
        zeros = torch.zeros(n, 2, self.height, self.width)
        channels = [self.rgb[index], zeros, prior]
        if self.net.in_channels == 7:
            channels.append(torch.full((n, 1, self.height, self.width), 0.5))
        return torch.cat(channels, dim=1)

    def _supervised_prior(self, t: int, labels: Labels, estimate: np.ndarray) -> np.ndarray:
        if labels.known[t].all():
            return deform(labels.value[t], self.rng)
        return estimate[t]  # the network has to correct this estimate where the human labelled pixels

    def fine_tune(self, labels: Labels, estimate: np.ndarray, progress: Progress | None = None) -> list[dict]:
        """Fine-tune on the labelled pixels and the temporal consistency; returns per-step losses."""
        c = self.config
        labelled = np.flatnonzero(labels.known.any(axis=(1, 2)))
        if len(labelled) == 0:
            raise ValueError("no labelled pixel: at least one annotated sample is needed")
        pasted = labels.paste(estimate)
        history = []
        for step in range(c.steps):
            sup = [int(t) for t in self.rng.choice(labelled, min(c.frames_per_step, len(labelled)), replace=False)]
            pairs = [int(t) for t in self.rng.integers(0, max(1, self.length - 1), c.pairs_per_step)]
            if self.length < 2:
                pairs = []
            index = sup + pairs + [t + 1 for t in pairs]
            priors = [self._supervised_prior(t, labels, estimate) for t in sup] + \
                     [pasted[t] for t in pairs] + [pasted[t + 1] for t in pairs]
            logits = self.net(self._inputs(index, np.stack(priors)))[:, 0]
            n = len(sup)
            known = torch.from_numpy(labels.known[sup]).float()
            target = torch.from_numpy(labels.value[sup]).float()
            supervised = supervised_loss(logits[:n], target, known)
            temporal = torch.zeros(())
            if pairs:
                prob = torch.sigmoid(logits[n:])
                k = len(pairs)
                temporal = temporal_loss(prob[:k], prob[k:], self.grids[pairs], self.valid[pairs])
            loss = supervised + c.temporal_weight * temporal
            self.optimizer.zero_grad()
            loss.backward()
            self.optimizer.step()
            history.append({"loss": loss.item(), "supervised": supervised.item(), "temporal": temporal.item()})
            if progress:
                progress(step + 1, c.steps, "fine-tuning")
        return history

    @torch.no_grad()
    def predict(self, labels: Labels, estimate: np.ndarray, batch: int = 4) -> np.ndarray:
        """[T, H, W] object probability of every frame; labelled pixels keep their human label."""
        pasted = labels.paste(estimate)
        out = np.empty_like(pasted)
        for start in range(0, self.length, batch):
            index = list(range(start, min(self.length, start + batch)))
            out[index] = torch.sigmoid(self.net(self._inputs(index, pasted[index]))[:, 0]).numpy()
        return labels.paste(out)

    def propagate(self, labels: Labels, estimate: np.ndarray, progress: Progress | None = None) -> np.ndarray:
        self.fine_tune(labels, estimate, progress)
        return self.predict(labels, estimate)


def supervised_loss(logits: torch.Tensor, target: torch.Tensor, known: torch.Tensor) -> torch.Tensor:
    """BCE + soft Dice over the labelled pixels only."""
    weight = known.sum().clamp(min=1)
    bce = (F.binary_cross_entropy_with_logits(logits, target, reduction="none") * known).sum() / weight
    prob = torch.sigmoid(logits) * known
    dice = 1 - (2 * (prob * target).sum() + 1) / (prob.sum() + (target * known).sum() + 1)
    return bce + dice


def temporal_loss(prob_t: torch.Tensor, prob_next: torch.Tensor, grids: torch.Tensor,
                  valid: torch.Tensor) -> torch.Tensor:
    """Mean |p_{t+1} - warp(p_t)| over pixels of t+1 with a consistent flow match."""
    warped = F.grid_sample(prob_t[:, None], grids, mode="bilinear", padding_mode="border", align_corners=True)
    return ((warped - prob_next[:, None]).abs() * valid).sum() / valid.sum().clamp(min=1)
