"""One selection round: eligibility, score band, strategy order, class balance, budget.

Budgets count regions or annotated pixels (so patches, superpixels and whole images compare on
annotation cost). A budget larger than what is eligible is INVALID_ARGUMENT (field ``budget``), unless
the caller takes what there is (``up_to_budget``).

Before any task model has scored a pool, ``select_unscored`` draws uniformly among its unlabelled items.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from services.common.errors import FailedPrecondition, InvalidArgument
from services.selection.candidates import Candidates
from services.selection.strategies import get_strategy, resolve_params


@dataclass
class Selected:
    rows: np.ndarray  # candidate rows, best first
    scores: np.ndarray  # the strategy's score of each
    reasons: list[str]
    class_index: np.ndarray  # class bucket of each (-1 without class balancing)
    budget_used: int
    considered: int


def _take(ordered: np.ndarray, budget: int, unit: str, area_px: np.ndarray) -> tuple[np.ndarray, int]:
    """The first rows of ``ordered`` within ``budget`` (regions, or pixels with the first that does not fit
    ending the batch), and the budget they use."""
    if unit == "regions":
        chosen = ordered[:budget]
        return chosen, len(chosen)
    fits = np.cumsum(area_px[ordered]) <= budget
    chosen = ordered[fits] if fits.all() else ordered[: int(np.argmin(fits))]
    return chosen, int(area_px[chosen].sum())


def interleave_classes(rows: np.ndarray, classes: np.ndarray) -> np.ndarray:
    """Round-robin over classes, keeping each class's own order (vectorised: rank within class)."""
    if len(rows) == 0:
        return rows
    cls = classes[rows]
    order = np.argsort(cls, kind="stable")
    sorted_cls = cls[order]
    starts = np.flatnonzero(np.r_[True, sorted_cls[1:] != sorted_cls[:-1]])
    rank = np.arange(len(rows)) - np.repeat(starts, np.diff(np.r_[starts, len(rows)]))
    rank_of = np.empty(len(rows), np.int64)
    rank_of[order] = rank
    return rows[np.lexsort((cls, rank_of))]


def _affordable(budget: int, available: int, unit: str, up_to_budget: bool, what: str) -> int:
    if budget <= 0:
        raise InvalidArgument("budget", "must be > 0", reason="OUT_OF_RANGE")
    if unit not in ("regions", "pixels"):
        raise InvalidArgument("budget_unit", "must be regions or pixels")
    if budget > available:
        if up_to_budget:
            return available
        raise InvalidArgument("budget", f"{budget} {unit} requested but only {available} eligible ({what}) in the "
                              "pool", reason="OUT_OF_RANGE")
    return budget


def select_unscored(c: Candidates, budget: int, unit: str = "regions", item_filter: np.ndarray | None = None,
                    seed: int | None = None, up_to_budget: bool = False) -> Selected:
    """Uniform random draw among the unlabelled items of a pool no task model has scored yet: with no
    model, every item is as worth a human's time as any other (the baseline every strategy must beat)."""
    eligible = ~c.labelled
    if item_filter is not None:
        eligible &= item_filter[c.item_index]
    rows = np.flatnonzero(eligible)
    available = len(rows) if unit == "regions" else int(c.area_px[rows].sum())
    budget = _affordable(budget, available, unit, up_to_budget, "unlabelled")
    ordered = np.random.default_rng(seed).permutation(rows)
    chosen, used = _take(ordered, budget, unit, c.area_px)
    reason = "uniform random draw: no task model has scored the pool yet"
    return Selected(chosen, np.full(len(chosen), 0.5), [reason] * len(chosen), np.full(len(chosen), -1), used,
                    len(rows))


def select_batch(c: Candidates, strategy_name: str, budget: int, unit: str = "regions",
                 params: dict[str, float] | None = None, class_balanced: bool = False,
                 band: tuple[float, float] | None = None, item_filter: np.ndarray | None = None,
                 seed: int | None = None, up_to_budget: bool = False) -> Selected:
    strategy = get_strategy(strategy_name)
    values = resolve_params(strategy, params or {})
    _affordable(budget, budget, unit, False, "")  # budget > 0, a known unit
    score = strategy.score(c)
    eligible = ~c.labelled & np.isfinite(score)
    if len(c) and not np.isfinite(score).any():
        raise FailedPrecondition(f"strategy {strategy.name!r} needs {', '.join(strategy.required_inputs)}; "
                                 "the scored predictions have none", field="strategy")
    if item_filter is not None:
        eligible &= item_filter[c.item_index]
    if band is not None:
        low, high = band
        if not 0 <= low <= high <= 1:
            raise InvalidArgument("score_band", "needs 0 <= low <= high <= 1", reason="OUT_OF_RANGE")
        eligible &= (score >= low) & (score <= high)
    rows = np.flatnonzero(eligible)
    available = len(rows) if unit == "regions" else int(c.area_px[rows].sum())
    budget = _affordable(budget, available, unit, up_to_budget, "unlabelled, scored, in band")
    if budget == 0:  # nothing eligible, and the caller takes what there is
        return Selected(rows, np.zeros(0), [], np.zeros(0, np.int64), 0, 0)
    # Number of regions to aim for: clusters of uncertainty_diversity for pixel budgets too.
    wanted = budget if unit == "regions" else max(1, int(round(budget / max(np.median(c.area_px[rows]), 1))))
    rng = np.random.default_rng(seed)
    ranking = strategy.rank(c, rows, min(wanted, len(rows)), values, rng)
    ordered = ranking.rows
    balanced = class_balanced or strategy.always_class_balanced
    if balanced:
        ordered = interleave_classes(ordered, c.majority_class)
    chosen, used = _take(ordered, budget, unit, c.area_px)
    chosen_scores = np.nan_to_num(ranking.score[chosen])
    notes = ranking.notes or {}
    reasons = [strategy.reason(float(v), notes.get(int(r), ranking.note)) for r, v in zip(chosen, chosen_scores)]
    class_index = c.majority_class[chosen] if balanced else np.full(len(chosen), -1)
    return Selected(chosen, chosen_scores, reasons, class_index, used, len(rows))
