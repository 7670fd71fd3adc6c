"""Per-pixel informativeness heuristics, each a map in [0, 1] (higher = more worth annotating).

All take class-probability arrays with the class axis third from last (``[K, H, W]``; members
``[M, K, H, W]``) and are vectorised over pixels; any leading axes are a batch of items of equal shape
(``[N, K, H, W]``, members ``[N, M, K, H, W]``), scored in one pass with the same result per item.
Normalisation by each measure's maximum makes them comparable: entropy by ln K, vote entropy and
JS divergence by ln min(M, K), the L2 spread by sqrt(2), and self-consistency is a total-variation
distance (already in [0, 1]).
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


def entropy(p: np.ndarray, axis: int = -3) -> np.ndarray:
    terms = np.clip(p, EPS, 1.0)
    np.log(terms, out=terms)
    terms *= p  # in place: p ln p with one temporary instead of three
    return -terms.sum(axis=axis)


def max_entropy(p: np.ndarray) -> np.ndarray:
    return entropy(p) / np.log(p.shape[-3])


def _committee_norm(members: np.ndarray) -> float:
    return float(np.log(max(2, min(members.shape[-4], members.shape[-3]))))


def class_argmax(p: np.ndarray) -> np.ndarray:
    """``p.argmax(axis=-3)`` (first maximum wins) as K elementwise passes: numpy's argmax along a
    non-last axis is several times slower."""
    best, votes = p[..., 0, :, :], np.zeros(p.shape[:-3] + p.shape[-2:], np.uint8 if p.shape[-3] <= 256 else np.intp)
    for k in range(1, p.shape[-3]):
        np.putmask(votes, p[..., k, :, :] > best, k)
        best = np.maximum(best, p[..., k, :, :])
    return votes


def vote_entropy(members: np.ndarray) -> np.ndarray:
    votes = class_argmax(members)  # [..., M, H, W]
    fractions = np.stack([(votes == k).mean(axis=-3) for k in range(members.shape[-3])], axis=-3)
    return entropy(fractions) / _committee_norm(members)


def js_divergence(members: np.ndarray) -> np.ndarray:
    value = entropy(members.mean(axis=-4)) - entropy(members).mean(axis=-3)
    return np.clip(value / _committee_norm(members), 0.0, 1.0)


def ensemble_l2(members: np.ndarray) -> np.ndarray:
    spread = np.sqrt(((members - members.mean(axis=-4, keepdims=True)) ** 2).sum(axis=-3)).mean(axis=-3)
    return np.clip(spread / np.sqrt(2.0), 0.0, 1.0)


def self_consistency(p: np.ndarray, augmented: np.ndarray) -> np.ndarray:
    """augmented: [..., A, K, H, W] already mapped back to the frame of ``p``."""
    return np.clip(0.5 * np.abs(augmented - p[..., None, :, :, :]).sum(axis=-3).mean(axis=-3), 0.0, 1.0)


def combined(p: np.ndarray, members: np.ndarray | None, augmented: np.ndarray | None) -> np.ndarray:
    average = p if members is None else (p + members.sum(axis=-4)) / (1 + members.shape[-4])
    uncertainty = max_entropy(average)
    if augmented is None:
        return uncertainty
    return 0.5 * (uncertainty + self_consistency(average, augmented))


def pixel_maps(p: np.ndarray, members: np.ndarray | None = None,
               augmented: np.ndarray | None = None) -> dict[str, np.ndarray | None]:
    """Every heuristic's map; None where the prediction lacks the heuristic's inputs."""
    has_members = members is not None and members.shape[-4] >= 2
    return {
        "entropy": max_entropy(p),
        "vote_entropy": vote_entropy(members) if has_members else None,
        "js_divergence": js_divergence(members) if has_members else None,
        "ensemble_l2": ensemble_l2(members) if has_members else None,
        "self_consistency": self_consistency(p, augmented) if augmented is not None else None,
        "combined": combined(p, members, augmented),
    }
