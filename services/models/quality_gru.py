"""The quality model: a GRU reads the per-click features; its final and mean-pooled states go through a
small MLP (deep part), added to a linear map of the session features and the last/mean/min/max click
features (wide part, which keeps the model sound on a few hundred sessions). It predicts the final IoU
and the probability that it is below each threshold of a fixed grid.

An ensemble of a few such networks (bagged, different seeds) is what ships; its outputs are averaged.
``probability_below(t)`` interpolates the grid monotonically, so any threshold in (0, 1) has an answer
and the default (0.85) is a trained head of its own.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

THRESHOLDS = (0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.95)
DEFAULT_THRESHOLD = 0.85


class ClickGRU(nn.Module):
    def __init__(self, step_features: int, session_features: int, hidden: int = 32, dropout: float = 0.1) -> None:
        super().__init__()
        self.embed = nn.Sequential(nn.Linear(step_features, hidden), nn.Tanh())
        self.gru = nn.GRU(hidden, hidden, batch_first=True)
        outputs = 1 + len(THRESHOLDS)
        # wide: linear in the session features and the last/mean/min/max click features; deep: the GRU
        self.wide = nn.Linear(4 * step_features + session_features, outputs)
        self.deep = nn.Sequential(nn.Dropout(dropout), nn.Linear(2 * hidden, hidden), nn.ReLU(),
                                  nn.Dropout(dropout), nn.Linear(hidden, outputs))

    def forward(self, steps: torch.Tensor, lengths: torch.Tensor, session: torch.Tensor) -> torch.Tensor:
        """(B, T, Fs) padded steps, (B,) lengths, (B, Fg) -> (B, 1 + len(THRESHOLDS)) logits: the IoU, then
        P(IoU < t) for each grid threshold."""
        out, _ = self.gru(self.embed(steps))  # padding comes after a sequence, so it never reaches it
        last = out[torch.arange(len(lengths)), lengths - 1]
        valid = (torch.arange(steps.shape[1])[None, :] < lengths[:, None]).unsqueeze(2).float()
        count = lengths[:, None].float()
        pooled = (out * valid).sum(1) / count  # the whole sequence, beside its end state
        big = torch.finfo(steps.dtype).max
        summary = [steps[torch.arange(len(lengths)), lengths - 1], (steps * valid).sum(1) / count,
                   torch.where(valid > 0, steps, big).amin(1), torch.where(valid > 0, steps, -big).amax(1)]
        return self.wide(torch.cat([*summary, session], dim=1)) + self.deep(torch.cat([last, pooled], dim=1))


def pad(sequences: list[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
    lengths = torch.tensor([len(s) for s in sequences])
    out = torch.zeros(len(sequences), int(lengths.max()), sequences[0].shape[1])
    for i, s in enumerate(sequences):
        out[i, : len(s)] = torch.from_numpy(s)
    return out, lengths


class Ensemble:
    """Networks sharing one feature normalisation; scores batches of (steps, session) feature arrays."""

    def __init__(self, networks: list[ClickGRU], norm: dict[str, np.ndarray]) -> None:
        self.networks = networks
        self.norm = {k: np.asarray(v, np.float32) for k, v in norm.items()}
        for net in networks:
            net.eval()

    def tensors(self, items: list[tuple[np.ndarray, np.ndarray]]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        n = self.norm
        steps, lengths = pad([(s - n["step_mean"]) / n["step_std"] for s, _ in items])
        session = torch.from_numpy(np.stack([(g - n["session_mean"]) / n["session_std"] for _, g in items]))
        return steps, lengths, session.float()

    def outputs(self, steps: torch.Tensor, lengths: torch.Tensor, session: torch.Tensor) -> torch.Tensor:
        """(B, 1 + len(THRESHOLDS)) probabilities averaged over the networks (differentiable)."""
        return torch.stack([torch.sigmoid(net(steps, lengths, session)) for net in self.networks]).mean(0)

    @torch.no_grad()
    def predict(self, items: list[tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
        return self.outputs(*self.tensors(items)).numpy()

    def state(self) -> dict:
        return {"networks": [net.state_dict() for net in self.networks],
                "norm": {k: v.tolist() for k, v in self.norm.items()},
                "hidden": self.networks[0].gru.hidden_size}

    @classmethod
    def from_state(cls, state: dict) -> "Ensemble":
        norm = state["norm"]
        networks = []
        for weights in state["networks"]:
            net = ClickGRU(len(norm["step_mean"]), len(norm["session_mean"]), state["hidden"])
            net.load_state_dict(weights)
            networks.append(net)
        return cls(networks, norm)


def probability_below(grid: np.ndarray, threshold: float) -> float:
    """P(IoU < threshold) from the grid heads ``grid`` (len(THRESHOLDS),), monotone in the threshold."""
    ts = np.asarray((0.0, *THRESHOLDS, 1.0))
    ps = np.maximum.accumulate(np.concatenate([[0.0], np.clip(grid, 0, 1), [1.0]]))
    return float(np.interp(threshold, ts, ps))
