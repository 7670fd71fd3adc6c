"""Scoring a session with the shipped quality model: predicted IoU, P(IoU < threshold) and the reasons.

Reasons are integrated-gradients attributions of P(IoU < threshold) to the features (from the training
mean, in the normalised space), summed over the clicks for per-click features; the top five by size.
The weights load on first use (``Scorer.load``), not at import.
"""

from __future__ import annotations

import hashlib
import io
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from services.models.quality_gru import (
    DEFAULT_THRESHOLD,
    THRESHOLDS,
    Ensemble,
    probability_below,
)
from services.quality import features

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
WEIGHTS = WEIGHTS_DIR / "click_gru.pt"
MODEL_NAME = "click-gru"
IG_STEPS = 16


@dataclass
class Reason:
    feature: str
    value: float
    contribution: float
    description: str


@dataclass
class Score:
    predicted_iou: float
    probability_below_threshold: float
    threshold: float
    model_version: str
    reasons: list[Reason] = field(default_factory=list)


class Scorer:
    def __init__(self, ensemble: Ensemble, version: str, card: dict | None = None) -> None:
        self.ensemble, self.version, self.card = ensemble, version, card or {}

    @classmethod
    def load(cls, weights: Path = WEIGHTS, card: Path | None = None) -> "Scorer":
        card_path = card or weights.with_suffix(".json")
        info = json.loads(card_path.read_text()) if card_path.exists() else {}
        blob = weights.read_bytes()
        return cls.from_bytes(blob, hashlib.sha256(blob).hexdigest()[:12], info)

    @classmethod
    def from_bytes(cls, blob: bytes, version: str, card: dict | None = None) -> "Scorer":
        """A scorer of ``Ensemble.state()`` saved by ``torch.save`` (the shipped file, a project's version)."""
        torch.set_num_threads(1)
        state = torch.load(io.BytesIO(blob), map_location="cpu", weights_only=True)
        return cls(Ensemble.from_state(state), version, card)

    def score(self, items: list[tuple[np.ndarray, np.ndarray]], threshold: float = DEFAULT_THRESHOLD,
              reasons: int = 5) -> list[Score]:
        """Scores feature pairs ``(steps, session)`` (``features.extract``) in one batch."""
        out = self.ensemble.predict(items)
        scores = [Score(float(o[0]), probability_below(o[1:], threshold), threshold, self.version) for o in out]
        if reasons:
            for score, item in zip(scores, items):
                score.reasons = self.explain(item, threshold)[:reasons]
        return scores

    def explain(self, item: tuple[np.ndarray, np.ndarray], threshold: float) -> list[Reason]:
        """Integrated gradients of the nearest grid head's probability, largest |contribution| first."""
        head = 1 + int(np.argmin(np.abs(np.asarray(THRESHOLDS) - threshold)))
        steps, lengths, session = self.ensemble.tensors([item])
        alphas = torch.linspace(1.0 / IG_STEPS, 1.0, IG_STEPS).view(-1, 1, 1)
        path_steps = (alphas * steps).requires_grad_(True)
        path_session = (alphas[:, :, 0] * session).requires_grad_(True)
        probs = self.ensemble.outputs(path_steps, lengths.repeat(IG_STEPS), path_session)[:, head]
        grad_steps, grad_session = torch.autograd.grad(probs.sum(), [path_steps, path_session])
        step_attr = (steps[0] * grad_steps.mean(0)).sum(0).numpy()
        session_attr = (session[0] * grad_session.mean(0)).numpy()
        raw_steps, raw_session = item
        reasons = [Reason(name, float(raw_steps[-1, i]), float(step_attr[i]), _describe(name, step_attr[i]))
                   for i, name in enumerate(features.STEP_FEATURES)]
        reasons += [Reason(name, float(raw_session[i]), float(session_attr[i]), _describe(name, session_attr[i]))
                    for i, name in enumerate(features.SESSION_FEATURES)]
        return sorted(reasons, key=lambda r: -abs(r.contribution))


def _describe(name: str, contribution: float) -> str:
    worse, better = features.DESCRIPTIONS[name]
    return worse if contribution > 0 else better
