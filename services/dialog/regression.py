"""Two small estimators fitted on recorded answers, shrunk towards documented priors so a handful of
answers moves them only a little: Bayesian ridge regression (a Gaussian prior on the coefficients
centred on the prior intercept) and L2-regularised logistic regression (Newton steps).

Both standardise features with the training statistics and report coefficients in the original units
(``{"intercept": ..., name: ...}``), the form stored and returned by GetCostModel.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from services.dialog.features import vector


@dataclass
class Linear:
    """``y = intercept + sum(coef[name] * x[name])`` in original units."""

    names: tuple[str, ...]
    coefficients: dict[str, float] = field(default_factory=dict)
    observations: int = 0
    mean: float = 0.0
    std: float = 0.0

    def predict(self, features: dict[str, float]) -> float:
        x = vector(features, self.names)
        return self.coefficients.get("intercept", 0.0) + float(
            sum(self.coefficients.get(n, 0.0) * v for n, v in zip(self.names, x)))

    def to_dict(self) -> dict:
        return {"names": list(self.names), "coefficients": self.coefficients,
                "observations": self.observations, "mean": self.mean, "std": self.std}

    @classmethod
    def from_dict(cls, data: dict) -> "Linear":
        return cls(tuple(data["names"]), dict(data["coefficients"]), int(data["observations"]),
                   float(data.get("mean", 0.0)), float(data.get("std", 0.0)))


def _standardise(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    mu = x.mean(axis=0)
    sd = x.std(axis=0)
    sd[sd < 1e-9] = 1.0
    return (x - mu) / sd, mu, sd


def _to_original(w: np.ndarray, b: float, mu: np.ndarray, sd: np.ndarray, names) -> dict[str, float]:
    coef = w / sd
    return {"intercept": float(b - coef @ mu), **{n: float(c) for n, c in zip(names, coef)}}


def _prior_vector(prior_intercept: float, prior: Linear | None, names, mu: np.ndarray,
                  sd: np.ndarray) -> np.ndarray:
    """The prior's coefficients in the standardised space of this fit: a pretrained model's when
    given (so answers move it only part of the way), else ``prior_intercept`` and zero slopes."""
    vec = np.zeros(len(names) + 1)
    if prior is None:
        vec[0] = prior_intercept
        return vec
    coef = np.array([prior.coefficients.get(n, 0.0) for n in names])
    vec[0] = prior.coefficients.get("intercept", 0.0) + float(coef @ mu)
    vec[1:] = coef * sd
    return vec


def _unfitted(names, prior_intercept: float, prior: Linear | None) -> Linear:
    if prior is not None:
        return Linear(names, dict(prior.coefficients), 0, prior.mean, prior.std)
    return Linear(names, {"intercept": prior_intercept}, 0, prior_intercept, 0.0)


def fit_ridge(names: tuple[str, ...], rows: list[dict], y: list[float], prior_intercept: float,
              strength: float = 4.0, prior: Linear | None = None) -> Linear:
    """Ridge regression shrunk, as if ``strength`` pseudo-answers at the prior had been seen, towards
    ``prior`` (a pretrained model) when given, else towards ``prior_intercept`` with zero slopes."""
    target = np.asarray(y, np.float64)
    n = len(target)
    if n == 0:
        return _unfitted(names, prior_intercept, prior)
    x, mu, sd = _standardise(np.stack([vector(r, names) for r in rows]))
    # Augmented least squares: [1, x] w = y, plus sqrt(strength) * (w - prior) = 0.
    design = np.hstack([np.ones((n, 1)), x])
    penalty = np.sqrt(strength) * np.eye(len(names) + 1)
    prior = _prior_vector(prior_intercept, prior, names, mu, sd)
    w, *_ = np.linalg.lstsq(np.vstack([design, penalty]), np.concatenate([target, penalty @ prior]), rcond=None)
    return Linear(names, _to_original(w[1:], w[0], mu, sd, names), n, float(target.mean()), float(target.std()))


def fit_logistic(names: tuple[str, ...], rows: list[dict], y: list[bool], prior_logit: float,
                 l2: float = 1.0, steps: int = 25, prior: Linear | None = None) -> Linear:
    """L2-regularised logistic regression shrunk towards ``prior`` (a pretrained model) when given,
    else towards ``prior_logit`` with zero slopes; coefficients are on the logit scale."""
    target = np.asarray(y, np.float64)
    n = len(target)
    if n == 0:
        return _unfitted(names, prior_logit, prior)
    x, mu, sd = _standardise(np.stack([vector(r, names) for r in rows]))
    design = np.hstack([np.ones((n, 1)), x])
    prior = _prior_vector(prior_logit, prior, names, mu, sd)
    w = prior.copy()
    reg = l2 * np.eye(design.shape[1])
    for _ in range(steps):
        p = 1 / (1 + np.exp(-np.clip(design @ w, -30, 30)))
        grad = design.T @ (p - target) + reg @ (w - prior)
        hess = design.T @ (design * (p * (1 - p))[:, None]) + reg
        step = np.linalg.solve(hess, grad)
        w -= step
        if np.abs(step).max() < 1e-8:
            break
    return Linear(names, _to_original(w[1:], w[0], mu, sd, names), n, float(target.mean()), 0.0)


def sigmoid(value: float) -> float:
    return float(1 / (1 + np.exp(-np.clip(value, -30, 30))))
