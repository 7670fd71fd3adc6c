"""Probability that a proposal passes verification (Konyushkova et al., CVPR 2018, IAD-Prob): a
logistic regression on model-confidence features, learned from recorded VERIFY answers.

Before enough answers exist the prior is the pretrained model (``pretrained.py``; without it the
documented base rate), moved halfway towards the proposal's own ``proposal_score`` when the client
sends one; answers then move the pretrained coefficients, not a blank model.
"""

from __future__ import annotations

import math

from services.dialog import pretrained
from services.dialog.regression import Linear, fit_logistic, sigmoid

FEATURES = ("proposal_score", "mean_foreground_probability", "mean_confidence", "uncertain_fraction",
            "relative_size", "boundary_complexity", "components", "border_fraction", "refine_agreement",
            "proposal_agreement")
MIN_OBSERVATIONS = 6  # one class is enough: the fit starts from the smoothed base rate, so a project
# whose proposals are all rejected learns to stop verifying them
PRIOR_RATE = 0.35  # shipped network: an automatic proposal reaches IoU 0.85 about this often (grabcut set)


def prior_probability(features: dict[str, float]) -> float:
    prior = pretrained.model("acceptance")
    base = PRIOR_RATE if prior is None else min(0.95, max(0.05, sigmoid(prior.predict(features))))
    score = features.get("proposal_score")
    if score is None:
        return base
    return float(min(0.95, max(0.05, 0.5 * base + 0.5 * float(score))))


class AcceptanceModel:
    def __init__(self, model: Linear | None = None) -> None:
        self.model = model

    @property
    def fitted(self) -> bool:
        return self.model is not None and self.model.observations >= MIN_OBSERVATIONS

    def probability(self, features: dict[str, float]) -> float:
        if not self.fitted:
            return prior_probability(features)
        return min(0.99, max(0.01, sigmoid(self.model.predict(features))))

    @classmethod
    def fit(cls, rows: list[dict], accepted: list[bool], l2: float = 2.0) -> "AcceptanceModel":
        rate = (sum(accepted) + PRIOR_RATE * 2) / (len(accepted) + 2)
        prior_logit = math.log(rate / (1 - rate))
        return cls(fit_logistic(FEATURES, rows, accepted, prior_logit, l2, prior=pretrained.model("acceptance")))
