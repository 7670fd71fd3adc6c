"""Per-pixel informativeness heuristics, each a map in [0, 1] (higher = more worth annotating).

All take class-probability arrays with the class axis first (``[K, H, W]``; members ``[M, K, H, W]``)
and are vectorised over pixels. Normalisation by each measure's maximum makes them comparable:
entropy by ln K, vote entropy and JS divergence by ln min(M, K), the L2 spread by sqrt(2), and
self-consistency is a total-variation distance (already in [0, 1]).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

EPS = 1e-12


@dataclass(frozen=True)
class Heuristic:
    name: str
    description: str
    required_inputs: tuple[str, ...]


HEURISTICS = {h.name: h for h in (
    Heuristic("entropy", "maximum entropy H = -sum_k p_k ln p_k of the prediction, / ln K",
              ("probabilities",)),
    Heuristic("vote_entropy", "entropy of the members' hard votes (query by committee), / ln min(M, K)",
              ("ensemble_members",)),
    Heuristic("js_divergence", "Jensen-Shannon divergence of the members: H(mean) - mean H, / ln min(M, K)"
              " (BALD-like mutual information for MC-dropout members)", ("ensemble_members",)),
    Heuristic("ensemble_l2", "mean L2 distance of the members to their average, / sqrt 2",
              ("ensemble_members",)),
    Heuristic("self_consistency", "total variation between the prediction and the inverse-transformed "
              "predictions of flipped / scaled inputs (test-time augmentation)", ("augmented",)),
    Heuristic("combined", "recommended default: (entropy of the ensemble average + self-consistency) / 2; "
              "the entropy term alone when no augmented predictions exist", ("probabilities",)),
)}


def entropy(p: np.ndarray, axis: int = 0) -> np.ndarray:
    return -(p * np.log(np.clip(p, EPS, 1.0))).sum(axis=axis)


def max_entropy(p: np.ndarray) -> np.ndarray:
    return entropy(p) / np.log(p.shape[0])


def _committee_norm(members: np.ndarray) -> float:
    return float(np.log(max(2, min(members.shape[0], members.shape[1]))))


def vote_entropy(members: np.ndarray) -> np.ndarray:
    votes = members.argmax(axis=1)  # [M, H, W]
    fractions = np.stack([(votes == k).mean(axis=0) for k in range(members.shape[1])])
    return entropy(fractions) / _committee_norm(members)


def js_divergence(members: np.ndarray) -> np.ndarray:
    value = entropy(members.mean(axis=0)) - entropy(members, axis=1).mean(axis=0)
    return np.clip(value / _committee_norm(members), 0.0, 1.0)


def ensemble_l2(members: np.ndarray) -> np.ndarray:
    spread = np.sqrt(((members - members.mean(axis=0)) ** 2).sum(axis=1)).mean(axis=0)
    return np.clip(spread / np.sqrt(2.0), 0.0, 1.0)


def self_consistency(p: np.ndarray, augmented: np.ndarray) -> np.ndarray:
    """augmented: [A, K, H, W] already mapped back to the frame of ``p``."""
    return np.clip(0.5 * np.abs(augmented - p[None]).sum(axis=1).mean(axis=0), 0.0, 1.0)


def combined(p: np.ndarray, members: np.ndarray | None, augmented: np.ndarray | None) -> np.ndarray:
    average = p if members is None else (p + members.sum(axis=0)) / (1 + members.shape[0])
    uncertainty = max_entropy(average)
    if augmented is None:
        return uncertainty
    return 0.5 * (uncertainty + self_consistency(average, augmented))


def pixel_maps(p: np.ndarray, members: np.ndarray | None = None,
               augmented: np.ndarray | None = None) -> dict[str, np.ndarray | None]:
    """Every heuristic's map; None where the prediction lacks the heuristic's inputs."""
    has_members = members is not None and members.shape[0] >= 2
    return {
        "entropy": max_entropy(p),
        "vote_entropy": vote_entropy(members) if has_members else None,
        "js_divergence": js_divergence(members) if has_members else None,
        "ensemble_l2": ensemble_l2(members) if has_members else None,
        "self_consistency": self_consistency(p, augmented) if augmented is not None else None,
        "combined": combined(p, members, augmented),
    }
