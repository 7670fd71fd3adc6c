"""The dialog domain without servers: timing, cost and acceptance models, policies, store, replay."""

from __future__ import annotations

import json

import numpy as np
import pytest

from services.common import question_timing
from services.common.clicks import Click
from services.common.errors import FailedPrecondition, InvalidArgument, NotFound
from services.common.storage import make_engine, make_session_factory, migrate
from services.dialog import cost_model, pretrained, proposals
from services.dialog.acceptance import AcceptanceModel, prior_probability
from services.dialog.cost_model import Answer, CostModel
from services.dialog.features import mask_features
from services.dialog.learning import load_models, refit
from services.dialog.outcomes import Outcome, Proposal, Run
from services.dialog.policy import Greedy, Models, get_policy, plan_cost, registry
from services.dialog.pretrain import rows_of
from services.dialog.questioner import Questioner
from services.dialog.questions import LABEL_REGION, SEGMENT, SKIP, VERIFY, Candidate, Step
from services.dialog.regression import Linear, fit_logistic, fit_ridge, sigmoid
from services.dialog.replay import bounds, replay
from services.dialog.store import DialogStore
from services.simulation.timing import VERIFY_S, QuestionTimer, expected_click_s

pytestmark = pytest.mark.unit


@pytest.fixture(autouse=True)
def no_pretrained_priors(monkeypatch):
    """These tests pin the documented constant priors; the pretrained file is tested on its own."""
    monkeypatch.setattr(pretrained, "model", lambda key, path=None: None)


def test_timing_priors_and_sampled_seconds():
    first, each = expected_click_s()
    assert 1.0 < each < 3.0 and first > each
    # the deployed cost model's constants are the simulated annotator's expectation
    assert (question_timing.FIRST_CLICK_S, question_timing.CLICK_S) == pytest.approx((first, each), abs=1e-3)
    timer = QuestionTimer(rng=np.random.default_rng(0))
    verifies = [timer.verify_s() for _ in range(2000)]
    assert abs(np.mean(verifies) - VERIFY_S) < 0.05
    clicks = [Click(50, 50, True), Click(60, 40, False), Click(10, 90, True)]
    fresh = QuestionTimer(rng=np.random.default_rng(1)).segment_s(clicks, (100, 100))
    seen = QuestionTimer(rng=np.random.default_rng(1)).segment_s(clicks, (100, 100), object_seen=True)
    assert 0 < seen < fresh  # same draws for the later clicks; a seen object needs no search
    assert QuestionTimer().segment_s([], (10, 10)) == 0.0


def test_mask_features():
    mask = np.zeros((100, 100), bool)
    mask[25:75, 25:75] = True
    f = mask_features(mask)
    assert f["relative_size"] == pytest.approx(0.25)
    assert f["components"] == 1 and f["border_fraction"] == 0
    assert 1.1 < f["boundary_complexity"] < 1.4  # a square: 4/pi
    assert mask_features(np.zeros((5, 5), bool))["relative_size"] == 0


def test_ridge_recovers_a_slope_and_shrinks_to_the_prior():
    rng = np.random.default_rng(0)
    rows = [{"relative_size": float(v)} for v in rng.uniform(0, 1, 200)]
    y = [2.0 + 6.0 * r["relative_size"] for r in rows]
    model = fit_ridge(("relative_size",), rows, y, prior_intercept=5.0, strength=0.01)
    assert model.coefficients["relative_size"] == pytest.approx(6.0, abs=0.1)
    assert model.predict({"relative_size": 0.5}) == pytest.approx(5.0, abs=0.1)
    one = fit_ridge(("relative_size",), rows[:1], [100.0], prior_intercept=5.0, strength=4.0)
    assert 5.0 < one.predict(rows[0]) < 30.0  # one answer moves it only part of the way
    assert fit_ridge(("relative_size",), [], [], 5.0).predict({}) == 5.0


def test_logistic_separates_confident_from_unsure_proposals():
    rng = np.random.default_rng(0)
    rows = [{"mean_confidence": float(v)} for v in rng.uniform(0, 1, 300)]
    y = [r["mean_confidence"] + rng.normal(0, 0.1) > 0.6 for r in rows]
    model = AcceptanceModel.fit(rows, y)
    assert model.fitted
    assert model.probability({"mean_confidence": 0.95}) > 0.8 > 0.2 > model.probability({"mean_confidence": 0.2})
    assert fit_logistic(("x",), [], [], 0.0).predict({}) == 0.0
    assert not AcceptanceModel.fit(rows[:3], [True, True, True]).fitted  # too few
    # a project whose proposals are all rejected learns that, instead of keeping the prior forever
    rejected = AcceptanceModel.fit(rows[:10], [False] * 10)
    assert rejected.fitted and rejected.probability(rows[0]) < 0.2 < prior_probability(rows[0])
    assert prior_probability({"proposal_score": 0.9}) > prior_probability({"proposal_score": 0.1})


def test_cost_model_learns_from_answers_and_prefers_the_annotator():
    slow = [Answer(VERIFY, {}, 4.0, accepted=True) for _ in range(5)]
    fast = [Answer(VERIFY, {}, 1.0, accepted=False) for _ in range(5)]
    project = cost_model.fit(slow + fast)
    annotator = cost_model.fit(fast)
    assert CostModel().seconds(VERIFY, {}) == VERIFY_S
    assert CostModel(project).seconds(VERIFY, {}) == pytest.approx(2.5, abs=0.5)
    assert CostModel(project, annotator).seconds(VERIFY, {}) < CostModel(project).seconds(VERIFY, {})
    segs = [Answer(SEGMENT, {"relative_size": s}, 2 + 10 * s, clicks=int(1 + 10 * s)) for s in np.linspace(0, 1, 20)]
    model = CostModel(cost_model.fit(segs))
    assert model.segment_seconds({"relative_size": 0.9}, False) > model.segment_seconds({"relative_size": 0.1}, False)
    assert CostModel().segment_seconds({}, True) < CostModel().segment_seconds({}, False)


def _candidate(p_features: list[dict], key="c") -> Candidate:
    return Candidate(key, "img", 1.0, {}, [{"features": f} for f in p_features])


def test_greedy_verifies_a_likely_proposal_and_segments_an_unlikely_one():
    rows = [{"mean_confidence": float(v)} for v in np.linspace(0, 1, 40)]
    acceptance = AcceptanceModel.fit(rows, [r["mean_confidence"] > 0.5 for r in rows])
    models = Models(CostModel(), acceptance)
    sure = Greedy().plan(_candidate([{"mean_confidence": 0.98}]), models)
    assert sure.steps[0] == Step(VERIFY, 0) and "p_accept" in sure.reason
    # with an unlikely proposal and correcting priced like scratch, segmenting directly is cheapest
    est = cost_model.fit([Answer(SEGMENT, {}, 14.0, clicks=7, from_proposal=True)] * 5)
    unsure = Greedy().plan(_candidate([{"mean_confidence": 0.02}]), Models(CostModel(est), acceptance))
    assert unsure.steps == [Step(SEGMENT)]
    # expected seconds: verify always, segment only after a rejection
    seconds, probabilities = plan_cost(_candidate([{"mean_confidence": 0.98}]),
                                       [Step(VERIFY, 0), Step(SEGMENT)], models)
    assert probabilities[0] > 0.9 and seconds < VERIFY_S + 0.1 * CostModel().segment_seconds({}, False)


def test_registry_fixed_plans_and_allowed_types():
    assert {"greedy", "always_segment", "verify_k_then_segment", "verify_then_correct"} <= set(registry())
    with pytest.raises(InvalidArgument):
        get_policy("nope")
    models = Models(CostModel(), AcceptanceModel())
    c = _candidate([{}, {}])
    assert get_policy("verify_2_then_segment").plan(c, models).steps == [Step(VERIFY, 0), Step(VERIFY, 1), Step(SEGMENT)]
    assert get_policy("verify_then_correct").plan(c, models).steps == [Step(VERIFY, 0), Step(SEGMENT, 0)]
    assert get_policy("verify_k_then_segment").plan(Candidate("n", "i"), models).steps == [Step(SEGMENT)]
    only_segment = get_policy("verify_k_then_segment").choose([c], models, frozenset({SEGMENT}))
    assert [s.type for s in only_segment.steps] == [SEGMENT]
    assert get_policy("always_segment").choose([c], models, frozenset({VERIFY})) is None
    skipped = Greedy(min_gain_per_second=100).choose([c], models)  # nothing clears it: SKIP, not silence
    assert skipped.steps == [Step(SKIP)] and skipped.expected_gain == 0 and "threshold" in skipped.reason
    assert Greedy(min_gain_per_second=100).choose([c], models, frozenset({SEGMENT, VERIFY})) is None


@pytest.fixture
def store(tmp_path):
    url = f"sqlite:///{tmp_path / 'dialog.db'}"
    migrate(url)
    return DialogStore(make_session_factory(make_engine(url)))


def test_questioner_plans_records_once_follows_up_and_learns(store):
    q = Questioner(store)
    c = _candidate([{"mean_confidence": 0.9}], key="k1")
    row = q.next_question("p", "ann", [c], {"k1": b"wire"}, "verify_k_then_segment")
    assert (row.type, row.step, row.plan) == (VERIFY, 0, [[VERIFY, 0], [SEGMENT, None]])
    assert q.next_question("p", "ann", [c], {"k1": b"wire"}) is None  # asked already
    with pytest.raises(InvalidArgument):
        q.record("p", row.question_id, "ann", "segment", {}, 2.0, c)  # does not fit VERIFY
    with pytest.raises(InvalidArgument):
        q.record("p", row.question_id, "ann", "verify", {"accepted": False}, 0.0, c)
    with pytest.raises(NotFound):
        q.record("other", row.question_id, "ann", "verify", {"accepted": False}, 1.0, c)
    recorded = q.record("p", row.question_id, "ann", "verify", {"accepted": False}, 2.2, c)
    assert recorded.follow_up.type == SEGMENT and recorded.follow_up.step == 1
    with pytest.raises(FailedPrecondition):
        q.record("p", row.question_id, "ann", "verify", {"accepted": True}, 1.0, c)
    q.record("p", recorded.follow_up.question_id, "ann", "segment", {"click_count": 5}, 9.0, c)
    counts = refit(store, "p", "ann")
    assert counts["project"] == {"answers": 2, "verifications": 1}
    models = load_models(store, "p", "ann")
    assert models.cost.scopes and not models.acceptance.fitted  # 1 answer: priors still rule


def _outcome(stem: str, proposal_iou: float, confidence: float, scratch_clicks: int, correct_clicks: int) -> Outcome:
    def run(n, start=0.0):
        ious = [min(0.99, 0.5 + 0.4 * (i + 1) / n) for i in range(n)]
        return Run([[10 + i, 10 + i, True] for i in range(n)], ious, start)
    return Outcome(stem, 100, 100, [Proposal("centre", proposal_iou, {"mean_confidence": confidence},
                                             run(correct_clicks, proposal_iou))], run(scratch_clicks))


def test_bounds_know_what_no_policy_knows():
    good = _outcome("good", 0.9, 0.3, 6, 0)  # proposal 0 passes
    bad = _outcome("bad", 0.3, 0.2, 4, 6)  # nothing passes; correcting costs more than starting over
    seconds = {name: replay([good, bad], policy, seed=1).total_seconds for name, policy in registry().items()}
    found = bounds([good, bad], seed=1)
    assert found["hindsight"] <= found["known_acceptance"] <= min(seconds.values())
    assert found["known_acceptance"] < min(v for k, v in seconds.items() if k != "greedy")
    alone = {o.stem: bounds([o], seed=1) for o in (good, bad)}
    assert alone["bad"]["known_acceptance"] == pytest.approx(
        replay([bad], registry()["always_segment"], seed=1).total_seconds, abs=0.01)
    assert alone["good"]["known_acceptance"] < replay([good], registry()["always_segment"], seed=1).total_seconds


def test_replay_greedy_learns_when_to_verify():
    rng = np.random.default_rng(0)
    outcomes = []
    for i in range(60):
        good = rng.random() < 0.4
        outcomes.append(_outcome(f"im{i}", 0.9 if good else 0.3, 0.9 if good else 0.3, 6, 0 if good else 7))
    totals = {name: replay(outcomes, policy, seed=1).total_seconds for name, policy in registry().items()}
    best_fixed = min(v for k, v in totals.items() if k != "greedy")
    assert totals["greedy"] < best_fixed
    assert replay(outcomes, registry()["always_segment"], seed=1).objects_reached == 60


def test_fits_shrink_towards_a_pretrained_model_not_towards_zero():
    names = ("relative_size",)
    prior = Linear(names, {"intercept": 1.0, "relative_size": 4.0}, 50, 3.0, 1.0)
    assert fit_ridge(names, [], [], 9.0, prior=prior).predict({"relative_size": 0.5}) == pytest.approx(3.0)
    rows = [{"relative_size": v} for v in (0.2, 0.4, 0.6, 0.8)]
    flat = fit_ridge(names, rows, [3.0] * 4, 3.0, strength=4.0)  # answers say: no slope
    pulled = fit_ridge(names, rows, [3.0] * 4, 3.0, strength=4.0, prior=prior)
    assert abs(flat.coefficients["relative_size"]) < 0.01
    assert 0.5 < pulled.coefficients["relative_size"] < 4.0  # between the answers and the prior
    logistic_prior = Linear(("x",), {"intercept": -2.0, "x": 4.0}, 50, 0.5, 0.0)
    assert fit_logistic(("x",), [], [], 0.0, prior=logistic_prior).predict({"x": 1.0}) == pytest.approx(2.0)
    few = fit_logistic(("x",), [{"x": 0.1}, {"x": 0.9}], [False, True], 0.0, l2=2.0, prior=logistic_prior)
    assert few.coefficients["x"] > 1.0  # two answers agreeing with the prior keep its slope


def test_pretrained_priors_price_proposals_until_answers_exist(monkeypatch, tmp_path):
    models = {"acceptance": Linear(("proposal_agreement",), {"intercept": -4.0, "proposal_agreement": 6.0}),
              "clicks:proposal": Linear(("proposal_agreement",), {"intercept": 8.0, "proposal_agreement": -7.0})}
    monkeypatch.setattr(pretrained, "model", lambda key, path=None: models.get(key))
    sure, unsure = {"proposal_agreement": 0.95}, {"proposal_agreement": 0.2}
    assert prior_probability(sure) == pytest.approx(sigmoid(-4.0 + 6.0 * 0.95))
    assert prior_probability(sure) > 0.8 > 0.2 > prior_probability(unsure)
    cost = CostModel()
    assert cost.expected_clicks(sure, from_proposal=True) < 2.0 < 6.0 < cost.expected_clicks(unsure, from_proposal=True)
    assert cost.expected_clicks(sure, from_proposal=False) == cost_model.SCRATCH_CLICKS  # no pretrained model


def test_pretrained_file_is_read_and_missing_means_none(tmp_path):
    path = tmp_path / "priors.json"
    path.write_text(json.dumps({"models": {"acceptance": Linear(("x",), {"intercept": 1.0}).to_dict()}}))
    assert pretrained._load(path)["acceptance"].predict({}) == 1.0  # the fixture stubs model(), not _load
    assert pretrained._load(tmp_path / "missing.json") == {}


def test_pretrain_rows_hold_every_proposal_and_every_start():
    outcomes = [_outcome("a", 0.9, 0.9, 3, 0), _outcome("b", 0.3, 0.2, 20, 5)]
    outcomes[1].scratch.ious = [0.5] * 20  # never reaches the target: priced at max_clicks
    rows = rows_of(outcomes, 0.85, 20)
    assert [r[2] for r in rows["acceptance"]] == [1.0, 0.0]
    assert [r[2] for r in rows["clicks:scratch"]] == [3.0, 20.0]
    assert [r[2] for r in rows["clicks:proposal"]] == [0.0, 5.0]
    assert [r[0] for r in rows["acceptance"]] == [0, 1]  # image index, for folds by image


def _region(kind: str, key: str, score: float = 0.8, proposals_: list[dict] | None = None) -> Candidate:
    return Candidate(key, "img", score, {"relative_size": 0.05}, proposals_ or [], region_kind=kind)


@pytest.mark.parametrize("kind", ["patch", "superpixel"])
def test_a_patch_or_superpixel_is_asked_as_label_region_by_every_policy(kind):
    models = Models(CostModel(), AcceptanceModel())
    for name, policy in registry().items():
        plan = policy.choose([_region(kind, "r")], models)
        assert [s.type for s in plan.steps] == [LABEL_REGION], name  # never one object of the whole image
        assert kind in plan.reason
    # a whole image beside it is still segmented; the region's plan is priced by the LABEL_REGION cost
    whole = Greedy().plan_for(Candidate("w", "img", 0.8), models)
    assert whole.steps == [Step(SEGMENT)]
    region = Greedy().plan_for(_region(kind, "r"), models)
    assert region.expected_seconds == pytest.approx(cost_model.PRIORS[LABEL_REGION].seconds)
    # a confident proposal inside the region is verified first, then the region labelled if rejected
    sure = Greedy().plan_for(_region(kind, "p", proposals_=[{"features": {}, "score": 0.99}]), models)
    assert [s.type for s in sure.steps] == [VERIFY, LABEL_REGION]
    # a client that cannot show LABEL_REGION gets no region question, not a whole-image segmentation
    assert get_policy("greedy").choose([_region(kind, "r")], models, frozenset({SEGMENT})) is None


def test_skip_is_decided_by_expected_gain_per_second_from_cost_and_acceptance():
    models = Models(CostModel(), AcceptanceModel())
    bare = Candidate("bare", "img", 0.1)  # no proposal: segmenting from scratch, about 8.5 s
    confident = Candidate("sure", "img", 0.1, {}, [{"features": {}, "score": 0.95}])  # verify: about 2 s
    scratch = plan_cost(bare, [Step(SEGMENT)], models)[0]
    threshold = 0.1 / scratch * 2  # what segmenting cannot reach, but a likely verification can
    greedy = get_policy("greedy")
    assert greedy.choose([bare], models, min_gain_per_second=threshold).steps == [Step(SKIP)]
    chosen = greedy.choose([confident], models, min_gain_per_second=threshold)
    assert chosen.steps[0] == Step(VERIFY, 0) and chosen.gain_per_second >= threshold
    # the acceptance model decides: the same proposal, learned to fail in this project, is not worth asking
    rows = [{"proposal_score": 0.95}] * 20
    failing = Models(CostModel(), AcceptanceModel.fit(rows, [False] * 20))
    assert greedy.choose([confident], failing, min_gain_per_second=threshold).steps == [Step(SKIP)]
    # the cost model decides: an annotator who segments fast makes the bare image worth it
    fast = cost_model.fit([Answer(SEGMENT, {}, 2.0, clicks=1)] * 10)
    assert greedy.choose([bare], Models(CostModel(fast), AcceptanceModel()),
                         min_gain_per_second=threshold).steps == [Step(SEGMENT)]
    # so does the selection score: a more informative region clears the same threshold
    rich = Candidate("rich", "img", 0.9)
    assert greedy.choose([bare, rich], models, min_gain_per_second=threshold).candidate.key == "rich"
    # the skip names the best candidate and why; a client that cannot show SKIP is told nothing is worth it
    skipped = greedy.choose([bare], models, min_gain_per_second=threshold)
    assert skipped.candidate.key == "bare" and f"{threshold:.4f}" in skipped.reason
    assert greedy.choose([bare], models, frozenset({SEGMENT}), threshold) is None


def test_questioner_asks_skip_and_label_region_and_records_their_answers(store):
    threshold = 0.05
    q = Questioner(store, min_gain_per_second=threshold)
    low = Candidate("low", "img", 0.01)
    row = q.next_question("p", "ann", [low], {"low": b"wire"})
    assert (row.type, row.plan, row.expected_gain) == (SKIP, [[SKIP, None]], 0.0) and "threshold" in row.reason
    with pytest.raises(InvalidArgument):
        q.record("p", row.question_id, "ann", "segment", {}, 1.0, low)
    q.record("p", row.question_id, "ann", "skip", {"reason": ""}, 0.5, low)
    assert q.next_question("p", "ann", [low], {"low": b"wire"}) is None  # asked: not again
    patch = _region("patch", "patch", score=0.9)
    asked = q.next_question("p", "ann", [patch], {"patch": b"wire"})
    assert asked.type == LABEL_REGION and asked.plan == [[LABEL_REGION, None]]
    q.record("p", asked.question_id, "ann", "labels", {"labels": [{"label": "cat"}]}, 6.0, patch)
    q.record("p", q.next_question("p", "ann", [_region("patch", "b")], {"b": b"w"}).question_id, "ann", "labels",
             {"labels": []}, 6.0, None)
    q.record("p", q.next_question("p", "ann", [_region("patch", "c")], {"c": b"w"}).question_id, "ann", "labels",
             {"labels": []}, 6.0, None)
    refit(store, "p", "ann")
    # three answers of 6 s move the cost of a region question from the 7 s prior towards them
    learned = load_models(store, "p", "ann").cost.seconds(LABEL_REGION, {})
    assert 6.0 <= learned < cost_model.PRIORS[LABEL_REGION].seconds


def test_live_proposal_clicks_stay_in_the_region_and_features_measure_agreement():
    centre = proposals.seed_clicks("centre", 64, 48)
    assert centre == [(32.0, 24.0, True)]
    box = (40.0, 8.0, 20.0, 30.0)
    clicks = proposals.seed_clicks("centre_corners", 64, 48, box)
    assert clicks[0] == (50.0, 23.0, True) and [p for _, _, p in clicks] == [True] + [False] * 4
    assert all(40 <= x < 60 and 8 <= y < 38 for x, y, _ in clicks)
    ranked = proposals.wanting([Candidate("a", "i", 0.2), Candidate("b", "i", 0.9), _region("patch", "r", 1.0),
                                Candidate("c", "i", 0.95, {}, [{"features": {}}]), Candidate("d", "i", 0.5)])
    assert [c.key for c in ranked] == ["b", "d"]  # best first, none with a proposal, no region
    one = np.zeros((48, 64), bool)
    one[10:30, 10:40] = True
    other = np.zeros_like(one)
    other[10:30, 10:25] = True
    made = proposals.live_proposal([(one, {"mean_confidence": 0.9}, [48, 64], "rle"),
                                    (other, {"mean_confidence": 0.8}, [48, 64], "rle2")], "clickseg:1", centre[0])
    assert made.counts == "rle" and made.features["proposal_agreement"] == pytest.approx(0.5)
    assert made.features["mean_confidence"] == 0.9
    assert made.features["relative_size"] == pytest.approx(600 / 3072, abs=1e-4)
    assert made.source == "segmentation clickseg:1, automatic positive click at (32, 24)"
