"""Selection strategies, chosen by name from a registry (an unknown name is INVALID_ARGUMENT).

A strategy turns the eligible candidate rows into a priority order (best first) with a score in
[0, 1] per row and a human-readable reason. Budgets, score bands and class balancing are applied
around it by ``batch.select_batch``, so every strategy gets them the same way.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from services.common.active_learning.diversity import select_diverse
from services.common.active_learning.heuristics import HEURISTICS
from services.common.errors import InvalidArgument
from services.selection.candidates import Candidates

ALL_GRANULARITIES = ("image", "patch", "superpixel")


@dataclass(frozen=True)
class Param:
    name: str
    description: str
    default: float
    low: float
    high: float


@dataclass(frozen=True)
class Ranking:
    rows: np.ndarray  # candidate rows, best first
    score: np.ndarray  # [len(candidates)] the strategy's score of every row, in [0, 1]
    notes: dict[int, str] | None = None  # extra reason text by row
    note: str = ""  # extra reason text of every row


class Strategy:
    name = ""
    description = ""
    parameters: tuple[Param, ...] = ()
    required_inputs: tuple[str, ...] = ("probabilities",)
    granularities = ALL_GRANULARITIES
    heuristic = "combined"  # the score that bands filter on and reasons report
    always_class_balanced = False

    def score(self, c: Candidates) -> np.ndarray:
        return c.scores[self.heuristic]

    def rank(self, c: Candidates, rows: np.ndarray, budget: int, params: dict, rng: np.random.Generator) -> Ranking:
        score = self.score(c)
        return Ranking(rows[np.argsort(-score[rows], kind="stable")], score)

    def reason(self, value: float, note: str = "") -> str:
        text = f"{self.heuristic.replace('_', ' ')} {value:.3f}"
        return f"{text}; {note}" if note else text


class HeuristicStrategy(Strategy):
    def __init__(self, heuristic: str) -> None:
        self.name = self.heuristic = heuristic
        h = HEURISTICS[heuristic]
        self.description, self.required_inputs = f"highest {h.description}", h.required_inputs


class Uniform(Strategy):
    name = "uniform"
    description = "uniform random sample of the unlabelled regions (the baseline every strategy must beat)"

    def rank(self, c, rows, budget, params, rng):
        return Ranking(rng.permutation(rows), self.score(c))

    def reason(self, value, note=""):
        return f"uniform random draw (combined {value:.3f})"


class UniformBottomN(Uniform):
    name = "uniform_bottom_n"
    description = ("uniform sample among regions of the N worst classes: classes ranked by the mean combined "
                   "uncertainty of the regions predicted as them; an item with image-level labels belongs to "
                   "its labelled classes, otherwise to its regions' predicted classes")
    parameters = (Param("bottom_n", "number of worst classes to sample from", 1, 1, 1000),)
    required_inputs = ("probabilities", "image_labels")

    def rank(self, c, rows, budget, params, rng):
        classes = int(max(c.majority_class.max(initial=0) + 1, 0 if c.item_labels is None else c.item_labels.shape[1]))
        uncertainty = np.bincount(c.majority_class[rows], weights=np.nan_to_num(c.scores["combined"][rows]),
                                  minlength=classes) / np.maximum(np.bincount(c.majority_class[rows], minlength=classes), 1)
        bottom = np.argsort(-uncertainty, kind="stable")[: int(params["bottom_n"])]
        in_bottom = np.isin(c.majority_class[rows], bottom)
        if c.item_labels is not None:
            labelled_items = c.item_labels[c.item_index[rows]]
            has_labels = labelled_items.any(axis=1)
            in_bottom = np.where(has_labels, labelled_items[:, bottom].any(axis=1), in_bottom)
        names = ", ".join(str(int(k)) for k in bottom)
        eligible = rows[in_bottom]
        return Ranking(rng.permutation(eligible), self.score(c), note=f"bottom class(es) {names}")

    def reason(self, value, note=""):
        return f"uniform draw among the {note} (combined {value:.3f})"


class ScoreBand(Uniform):
    name = "score_band"
    description = ("regions whose combined score lies in [low, high], sampled uniformly and class-balanced "
                   "(the learnable middle: neither hopeless nor already known)")
    parameters = (Param("low", "lower bound of the combined score", 0.3, 0.0, 1.0),
                  Param("high", "upper bound of the combined score", 0.7, 0.0, 1.0))
    always_class_balanced = True

    def rank(self, c, rows, budget, params, rng):
        if params["low"] > params["high"]:
            raise InvalidArgument("params.low", "must be <= params.high")
        score = self.score(c)
        inside = rows[(score[rows] >= params["low"]) & (score[rows] <= params["high"])]
        return Ranking(rng.permutation(inside), score)

    def reason(self, value, note=""):
        return f"combined {value:.3f} within the score band"


class UncertaintyDiversity(Strategy):
    name = "uncertainty_diversity"
    description = ("most uncertain half (combined score) clustered with MiniBatchKMeans into b = budget clusters "
                   "in embedding space; the member nearest each centroid")
    parameters = (Param("uncertain_fraction", "fraction of the most uncertain candidates clustered", 0.5, 0.01, 1.0),)

    def rank(self, c, rows, budget, params, rng):
        score = self.score(c)
        chosen, cluster = select_diverse(rows, score, c.features, budget, int(rng.integers(2**31)),
                                         params["uncertain_fraction"])
        notes = {int(r): f"nearest to centroid of cluster {int(k)}" for r, k in zip(chosen, cluster)}
        taken = np.zeros(len(score), bool)
        taken[chosen] = True
        rest = rows[~taken[rows]]  # after the clusters, by score (pixel budgets may need more); rows is sorted
        return Ranking(np.concatenate([chosen, rest[np.argsort(-score[rest], kind="stable")]]), score, notes)


STRATEGIES: dict[str, Strategy] = {s.name: s for s in (
    Uniform(), UniformBottomN(), ScoreBand(), *(HeuristicStrategy(h) for h in HEURISTICS), UncertaintyDiversity())}


def get_strategy(name: str) -> Strategy:
    if name not in STRATEGIES:
        raise InvalidArgument("strategy", f"unknown strategy {name!r}; one of {', '.join(STRATEGIES)}",
                              reason="UNKNOWN_STRATEGY")
    return STRATEGIES[name]


def resolve_params(strategy: Strategy, given: dict[str, float]) -> dict[str, float]:
    known = {p.name: p for p in strategy.parameters}
    for name, value in given.items():
        if name not in known:
            raise InvalidArgument(f"params.{name}", f"strategy {strategy.name!r} has no parameter {name!r}")
        if not known[name].low <= value <= known[name].high:
            raise InvalidArgument(f"params.{name}", f"must be in [{known[name].low:g}, {known[name].high:g}]",
                                  reason="OUT_OF_RANGE")
    return {p.name: float(given.get(p.name, p.default)) for p in strategy.parameters}
