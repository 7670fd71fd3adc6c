"""The quality domain without transport: summaries, features, model, scoring, metrics, the store."""

import json

import numpy as np
import pytest
import torch

from services.common import annotation_events
from services.common.errors import InvalidArgument, NotFound
from services.common.masks import encode_rle
from services.common.storage import make_engine, make_session_factory, migrate
from services.models.quality_gru import THRESHOLDS, probability_below
from services.quality import features, summary
from services.quality.metrics import ranking_metrics
from services.quality.scorer import WEIGHTS, Scorer
from services.quality.sessions import check_threshold, record_submitted, score_summaries, summary_of
from services.quality.store import ACCEPTED, CORRECTED, QualityStore
from services.quality.train import featurise, fit
from tests.quality.helpers import H, W, make_event, make_payload, make_summary, square_mask

pytestmark = pytest.mark.unit


def field_of(call) -> str:
    with pytest.raises(InvalidArgument) as excinfo:
        call()
    return excinfo.value.field


# --- summaries -------------------------------------------------------------------------------------
def test_a_valid_summary_gives_its_final_mask():
    mask = summary.validate(make_summary())
    assert mask.shape == (H, W) and (mask == square_mask()).all()


@pytest.mark.parametrize("break_it, field", [
    (lambda s: s.update(clicks=[], steps=[]), "steps"),
    (lambda s: s["clicks"][2].update(t_ms=10), "steps[2].click.t_ms"),
    (lambda s: s["clicks"][1].update(index=5), "steps[1].click.index"),
    (lambda s: s["clicks"][0].update(x=W + 3), "steps[0].click.x"),
    (lambda s: s["clicks"][0].update(y=float("nan")), "steps[0].click.y"),
    (lambda s: s["steps"].pop(), "steps"),
    (lambda s: s["mask"].update(size=[H + 1, W]), "mask.size"),
    (lambda s: s["mask"].update(counts="!!"), "mask.counts"),
    (lambda s: s["session"].pop("width"), "image"),
])
def test_bad_summaries_are_refused_naming_the_field(break_it, field):
    bad = make_summary()
    break_it(bad)
    assert field_of(lambda: summary.validate(bad, "sequence.")) == f"sequence.{field}"


def test_an_inline_sequence_becomes_a_summary_with_areas_and_mask_changes():
    masks = [square_mask(20, 30), square_mask()]
    clicks = [{"x": 35.0, "y": 25.0, "positive": True, "t_ms": 500, "index": 0},
              {"x": 50.0, "y": 40.0, "positive": True, "t_ms": 1500, "index": 1}]
    s = summary.from_steps(W, H, clicks, masks, [0.9, 0.95], [0.8, 0.9], [0.1, 0.02])
    assert (summary.validate(s) == masks[-1]).all()
    assert s["steps"][1]["stats"]["area_px"] == square_mask().sum()
    assert s["steps"][1]["iou_with_previous"] == pytest.approx(100 / 900)


# --- features -------------------------------------------------------------------------------------
def test_features_read_timing_agreement_and_mask_change():
    good, bad = make_summary(), make_summary(good=False)
    steps_g, session_g = features.extract(good, summary.validate(good))
    steps_b, session_b = features.extract(bad, summary.validate(bad))
    assert steps_g.shape == (3, len(features.STEP_FEATURES)) and session_g.shape == (len(features.SESSION_FEATURES),)
    col = features.STEP_FEATURES.index
    ses = features.SESSION_FEATURES.index
    assert steps_g[0, col("log_dt")] == pytest.approx(np.log1p(0.9))
    assert (steps_g[:, col("agrees_with_mask")] == 1).all()  # every positive click is inside the square
    assert (steps_g[:, col("boundary_distance")] > 0).all()
    assert steps_b[:, col("agrees_with_mask")].mean() < 1  # the sliver leaves clicks outside
    assert session_b[ses("disagreeing_clicks")] > session_g[ses("disagreeing_clicks")] == 0
    assert session_b[ses("total_time")] > session_g[ses("total_time")]
    assert session_g[ses("click_count")] == pytest.approx(0.3)
    assert session_g[ses("components")] == pytest.approx(np.log(2))
    assert 0.5 < session_g[ses("compactness")] <= 2
    assert set(features.DESCRIPTIONS) == set(features.STEP_FEATURES) | set(features.SESSION_FEATURES)


# --- model, scoring, metrics --------------------------------------------------------------------------
def test_probability_below_is_monotone_and_exact_on_the_grid():
    grid = np.linspace(0.1, 0.9, len(THRESHOLDS))
    assert probability_below(grid, 0.85) == pytest.approx(grid[THRESHOLDS.index(0.85)])
    values = [probability_below(grid[::-1], t) for t in np.linspace(0.01, 0.99, 50)]  # even a crossing grid
    assert all(b >= a for a, b in zip(values, values[1:])) and 0 <= values[0] and values[-1] <= 1


def test_the_scorer_separates_good_from_bad_and_explains(tiny_scorer):
    good, bad = score_summaries(tiny_scorer, [make_summary("x", clicks=4), make_summary("y", clicks=3, good=False)])
    assert good.predicted_iou > bad.predicted_iou
    assert bad.probability_below_threshold > good.probability_below_threshold
    assert len(bad.reasons) == 5 and bad.model_version == "tiny" and bad.threshold == 0.85
    sizes = [abs(r.contribution) for r in bad.reasons]
    assert sizes == sorted(sizes, reverse=True) and sizes[0] > 0
    assert all(r.description for r in bad.reasons)
    loose = score_summaries(tiny_scorer, [make_summary("y", clicks=3, good=False)], threshold=0.5)[0]
    assert loose.probability_below_threshold <= bad.probability_below_threshold
    assert field_of(lambda: check_threshold(1.5)) == "threshold" and check_threshold(0) == 0.85


def test_batches_are_all_or_nothing_with_the_item_named(tiny_scorer):
    broken = make_summary("z")
    broken["clicks"][1]["t_ms"] = 1
    assert field_of(lambda: score_summaries(tiny_scorer, [make_summary(), broken], prefixes=["items[0].", "items[1]."])) \
        == "items[1].steps[1].click.t_ms"


def test_weights_round_trip_through_a_file(tmp_path, tiny_scorer):
    path = tmp_path / "w.pt"
    torch.save(tiny_scorer.ensemble.state(), path)
    path.with_suffix(".json").write_text(json.dumps({"training_sessions": 16}))
    loaded = Scorer.load(path)
    items = featurise([make_summary()])
    assert np.allclose(loaded.ensemble.predict(items), tiny_scorer.ensemble.predict(items), atol=1e-6)
    assert len(loaded.version) == 12 and loaded.card["training_sessions"] == 16


def test_the_shipped_weights_load_and_score():
    scorer = Scorer.load(WEIGHTS)
    (score,) = score_summaries(scorer, [make_summary()])
    assert 0 <= score.predicted_iou <= 1 and 0 <= score.probability_below_threshold <= 1
    assert scorer.card["training_command"].startswith("python -m services.quality.train")


def test_fit_learns_a_separable_toy_problem():
    summaries = [make_summary(f"g{i}") for i in range(6)] + [make_summary(f"b{i}", good=False) for i in range(6)]
    ious = np.asarray([0.95] * 6 + [0.4] * 6)
    model = fit(featurise(summaries), ious, members=1, epochs=40, hidden=8)
    out = model.predict(featurise(summaries))
    assert out[:6, 0].min() > out[6:, 0].max()


def test_ranking_metrics():
    true = np.asarray([0.2, 0.5, 0.9, 0.95, 0.97, 0.99, 0.6, 0.92, 0.88, 0.3])
    perfect = ranking_metrics(true, true)
    assert perfect["spearman"] == 1 and perfect["roc_auc"] == 1 and perfect["precision_at_worst_10pct"] == 1
    assert ranking_metrics(-true, true)["roc_auc"] == 0
    assert ranking_metrics(true, true, badness=-true)["roc_auc"] == 1


# --- the store -----------------------------------------------------------------------------------------
@pytest.fixture
def store(tmp_path):
    url = f"sqlite:///{tmp_path}/q.db"
    migrate(url)
    return QualityStore(make_session_factory(make_engine(url)))


def test_the_event_reads_as_the_summary_it_was_made_of():
    for good in (True, False):
        read, made = summary_of(make_event("s1", good=good)), make_summary("s1", good=good)
        keys = ("session_id", "project_id", "image_id", "width", "height", "annotator_id", "task_id", "label",
                "finish_time", "create_time")
        assert {k: read["session"][k] for k in keys} == {k: made["session"][k] for k in keys}
        assert read["clicks"] == made["clicks"] and read["mask"] == made["mask"]
        mask = summary.validate(read)
        for a, b in zip(features.extract(read, mask), features.extract(made, summary.validate(made))):
            np.testing.assert_allclose(a, b, atol=1e-5)  # the model sees the same session (float32 in the proto)


def test_recording_is_idempotent_and_keeps_the_review(store, tiny_scorer):
    payload = make_payload("s1")
    first = record_submitted(store, tiny_scorer, annotation_events.decode(payload, label_required=False))
    store.review("p1", "s1", ACCEPTED, reviewer_id="rev")
    again = record_submitted(store, tiny_scorer, annotation_events.decode(json.loads(json.dumps(payload))))
    assert again == first  # redelivered
    rows, _, total = store.queue("p1", include_reviewed=True)
    assert total == 1 and rows[0].verdict == ACCEPTED and rows[0].reviewer_id == "rev"
    no_clicks = make_event("s2")
    del no_clicks.clicks[:], no_clicks.steps[:]
    assert field_of(lambda: record_submitted(store, tiny_scorer, no_clicks)) == "steps"


def test_the_review_queue_is_worst_first_filtered_and_paged(store, tiny_scorer):
    for i in range(5):
        record_submitted(store, tiny_scorer, make_event(f"g{i}", clicks=2 + i % 3, annotator="alice",
                                                        finish_time=1_800_000_000 + i))
        record_submitted(store, tiny_scorer, make_event(f"b{i}", clicks=3, good=False, annotator="bob",
                                                        finish_time=1_800_000_100 + i))
    record_submitted(store, tiny_scorer, make_event("other", project_id="p2"))
    rows, token, total = store.queue("p1", page_size=4)
    assert total == 10 and len(rows) == 4 and token
    assert all(r.session_id.startswith("b") for r in rows)
    ious = [r.predicted_iou for r in rows]
    assert ious == sorted(ious)
    seen = [r.session_id for r in rows]
    while token:
        more, token, _ = store.queue("p1", page_size=4, page_token=token)
        seen += [r.session_id for r in more]
    assert sorted(seen) == sorted([f"g{i}" for i in range(5)] + [f"b{i}" for i in range(5)])
    assert {r.annotator_id for r in store.queue("p1", annotator_id="alice")[0]} == {"alice"}
    worst_iou = rows[0].predicted_iou
    assert store.queue("p1", max_predicted_iou=worst_iou)[2] >= 1
    from datetime import UTC, datetime
    late = store.queue("p1", start=datetime.fromtimestamp(1_800_000_050, UTC))[0]
    assert {r.session_id for r in late} == {f"b{i}" for i in range(5)}
    _, first_token, _ = store.queue("p1", page_size=2)
    assert field_of(lambda: store.queue("p1", annotator_id="bob", page_size=2, page_token=first_token)) \
        == "page.page_token"
    assert field_of(lambda: store.queue("p1", page_token="garbage")) == "page.page_token"


def test_a_correction_gives_the_true_iou_and_a_training_label(store, tiny_scorer):
    record_submitted(store, tiny_scorer, make_event("s1"))
    half = square_mask()
    half[:, :40] = False
    size, counts = encode_rle(half)
    row = store.review("p1", "s1", CORRECTED, {"size": size, "counts": counts}, "rev", "cut the left half")
    assert row.true_iou == pytest.approx(half.sum() / square_mask().sum())
    assert store.queue("p1")[2] == 0 and store.queue("p1", include_reviewed=True)[2] == 1
    (labelled,) = store.labelled_sessions()
    assert labelled[0]["session"]["session_id"] == "s1" and labelled[1] == pytest.approx(row.true_iou)
    assert field_of(lambda: store.review("p1", "s1", CORRECTED, None)) == "corrected_mask"
    assert field_of(lambda: store.review("p1", "s1", 0)) == "verdict"
    assert field_of(lambda: store.review("p1", "s1", CORRECTED, {"size": [1, 1], "counts": "1"})) \
        == "corrected_mask.size"
    with pytest.raises(NotFound):
        store.review("p1", "nope", ACCEPTED)
    with pytest.raises(NotFound):
        store.get("p2", "s1")
