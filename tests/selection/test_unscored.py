"""Selection before any task model: the default strategy draws uniformly among unlabelled items (a fresh
project's normal state), and ``up_to_budget`` takes what there is (issue 19, item 4)."""

from __future__ import annotations

import numpy as np
import pytest

from services.common.errors import InvalidArgument
from services.selection.batch import select_unscored
from services.selection.candidates import unscored

pytestmark = pytest.mark.unit


def pool(n: int = 5, labelled=(1,)):
    return unscored([f"i{k}" for k in range(n)], [(10, 20)] * n, [k in labelled for k in range(n)])


def test_a_uniform_draw_among_the_unlabelled_items():
    c = pool()
    chosen = select_unscored(c, 3, seed=1)
    assert len(chosen.rows) == 3 and 1 not in chosen.rows and len(set(chosen.rows)) == 3
    assert chosen.considered == 4 and chosen.budget_used == 3
    assert all(r.startswith("uniform random draw") for r in chosen.reasons)
    assert c.breakdown(int(chosen.rows[0])) == {}  # no heuristic score: none reported
    assert list(c.boxes[0]) == [0, 0, 20, 10] and c.area_px[0] == 200
    draws = {tuple(select_unscored(c, 4, seed=s).rows) for s in range(20)}
    assert len(draws) > 1  # random order, seeded


def test_a_budget_over_the_unlabelled_items_is_refused_unless_up_to_budget():
    c = pool()
    with pytest.raises(InvalidArgument) as refused:
        select_unscored(c, 10)
    assert refused.value.field == "budget"
    assert len(select_unscored(c, 10, up_to_budget=True).rows) == 4
    assert len(select_unscored(pool(2, labelled=(0, 1)), 3, up_to_budget=True).rows) == 0
    assert select_unscored(c, 450, unit="pixels", seed=0).budget_used == 400  # two 200-pixel items fit
    assert len(select_unscored(c, 2, item_filter=np.array([True, True, False, False, False]), up_to_budget=True).rows) == 1
