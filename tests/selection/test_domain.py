"""The selection domain: heuristics, regions, strategies, diversity, propagation, wire validation."""

from __future__ import annotations

import numpy as np
import pytest

from services.common.active_learning import diversity, heuristics
from services.common.active_learning.regions import (
    patch_grid,
    region_means,
    superpixel_grid,
)
from services.common.active_learning.transforms import apply, invert
from services.common.errors import FailedPrecondition, InvalidArgument
from services.selection import scoring
from services.selection.batch import interleave_classes, select_batch
from services.selection.candidates import Candidates
from services.selection.predictions import Prediction, build
from services.selection.propagation import colour_histogram, js_divergence, nearest
from services.selection.scoring import RegionSpec, score_prediction, score_predictions
from services.selection.strategies import STRATEGIES

pytestmark = pytest.mark.unit


def probs(rng, k=2, h=32, w=48):
    logits = rng.normal(size=(k, h, w)) * 3
    e = np.exp(logits)
    return (e / e.sum(axis=0)).astype(np.float32)


def wire(a, dtype="FLOAT32"):
    np_dtype = {"FLOAT32": "<f4", "FLOAT16": "<f2"}[dtype]
    return list(a.shape), dtype, a.astype(np_dtype).tobytes()


def test_entropy_is_zero_when_certain_and_one_when_uniform():
    certain = np.zeros((3, 2, 2)); certain[1] = 1
    uniform = np.full((3, 2, 2), 1 / 3)
    assert np.allclose(heuristics.max_entropy(certain), 0)
    assert np.allclose(heuristics.max_entropy(uniform), 1)


def test_ensemble_measures_are_zero_for_agreeing_members_and_high_for_disagreeing():
    a = np.zeros((2, 1, 1)); a[0] = 1
    b = np.zeros((2, 1, 1)); b[1] = 1
    agree, disagree = np.stack([a, a]), np.stack([a, b])
    for measure in (heuristics.vote_entropy, heuristics.js_divergence, heuristics.ensemble_l2):
        assert np.allclose(measure(agree), 0)
        assert measure(disagree).item() > 0.49
    assert np.isclose(heuristics.js_divergence(disagree).item(), 1.0)  # ln 2 / ln 2
    assert np.isclose(heuristics.vote_entropy(disagree).item(), 1.0)


def test_self_consistency_of_a_flip_equivariant_prediction_is_zero(rng=np.random.default_rng(0)):
    p = probs(rng)
    symmetric = (p + p[:, :, ::-1]) / 2
    flipped = apply(symmetric, "hflip")  # what a perfectly equivariant model predicts on the flipped input
    back = invert(flipped, "hflip", symmetric.shape[1:])
    assert np.allclose(heuristics.self_consistency(symmetric, back[None]), 0, atol=1e-6)
    assert heuristics.self_consistency(p, p[:, :, ::-1][None]).mean() > 0.1


def test_scale_inverse_restores_the_frame_and_stays_normalised(rng=np.random.default_rng(1)):
    p = probs(rng, 3, 40, 60)
    small = apply(p, "scale", 0.5)
    assert small.shape == (3, 20, 30)
    back = invert(small, "scale", (40, 60))
    assert back.shape == p.shape and np.allclose(back.sum(axis=0), 1, atol=1e-5)


def test_patch_grid_and_region_means_match_a_direct_computation(rng=np.random.default_rng(2)):
    values = rng.random((32, 48))
    grid = patch_grid((32, 48), (32, 48), 16)
    assert grid.count == 6 and grid.area_px.sum() == 32 * 48
    means = region_means(grid, values)
    assert np.isclose(means[4], values[16:32, 16:32].mean())
    # a coarser map than the image: 64x96 image, 32x48 map, 16 px patches = 8 px of map each
    coarse = patch_grid((32, 48), (64, 96), 16)
    assert coarse.count == 24 and np.isclose(region_means(coarse, values)[0], values[:8, :8].mean())
    # clipped last row/column
    clipped = patch_grid((30, 50), (30, 50), 16)
    assert clipped.boxes[-1].tolist() == [48, 16, 2, 14]


def test_superpixels_cover_the_image_with_boxes(rng=np.random.default_rng(3)):
    image = (rng.random((40, 60, 3)) * 255).astype(np.uint8)
    grid = superpixel_grid((20, 30), (40, 60), 12, image=image)
    assert grid.area_px.sum() == 40 * 60 and grid.full_labels.shape == (40, 60)
    assert (grid.boxes[:, 2] > 0).all() and (grid.boxes[:, 0] + grid.boxes[:, 2] <= 60).all()
    without_image = superpixel_grid((20, 30), (40, 60), 12, probabilities=probs(rng, 2, 20, 30))
    assert without_image.count > 1


def test_score_prediction_fills_missing_heuristics_with_nan(rng=np.random.default_rng(4)):
    p = Prediction(probs(rng))
    image, patches = score_prediction(p, [RegionSpec("image"), RegionSpec("patch", 16)])
    assert len(image) == 1 and len(patches) == 6
    assert np.isnan(patches.scores["js_divergence"]).all()
    assert np.isfinite(patches.scores["entropy"]).all() and np.allclose(patches.scores["entropy"],
                                                                          patches.scores["combined"])


def test_wire_validation_names_the_field(rng=np.random.default_rng(5)):
    p = probs(rng)
    good = build("predictions[0]", 2, wire(p, "FLOAT16"), [wire(p), wire(p)],
                 [("hflip", 0, wire(p[:, :, ::-1].copy()), False)], [1.0, 2.0])
    assert good.members.shape == (2, 2, 32, 48) and np.allclose(good.augmented[0], p, atol=1e-6)
    cases = [
        (dict(probabilities=wire(p * 0.9)), "predictions[0].probabilities"),
        (dict(probabilities=wire(p[:1] * 0 + 1)), "predictions[0].probabilities.shape"),
        (dict(probabilities=(list(p.shape), "FLOAT32", b"1234")), "predictions[0].probabilities.data"),
        (dict(probabilities=wire(p), members=[wire(p[:, :16])]), "predictions[0].ensemble_members[0].shape"),
        (dict(probabilities=wire(p), augmented=[("scale", 0, wire(p), False)]), "predictions[0].augmented[0].scale"),
    ]
    for kwargs, field in cases:
        with pytest.raises(InvalidArgument) as err:
            build("predictions[0]", 2, **kwargs)
        assert err.value.field == field, (field, err.value)


def candidates(rng, n_items=20, per_item=6, classes=2, embeddings=True):
    per = []
    for _ in range(n_items):
        per.append(score_prediction(Prediction(probs(rng, classes, 32, 48)), [RegionSpec("patch", 16)])[0])
    emb = rng.normal(size=(n_items, 8)).astype(np.float32) if embeddings else None
    return Candidates.from_scores([f"im{i}" for i in range(n_items)], per, classes, embeddings=emb)


def test_heuristic_strategy_returns_the_top_scores_and_never_labelled(rng=np.random.default_rng(6)):
    c = candidates(rng)
    c.labelled[np.argsort(-c.scores["entropy"])[:3]] = True  # the three best are already labelled
    chosen = select_batch(c, "entropy", 5, seed=1)
    expected = np.argsort(-np.where(c.labelled, -1, c.scores["entropy"]))[:5]
    assert set(chosen.rows) == set(expected) and not c.labelled[chosen.rows].any()
    assert list(chosen.scores) == sorted(chosen.scores, reverse=True)
    assert chosen.reasons[0].startswith("entropy 0.")


def test_budget_errors_and_unknown_strategy(rng=np.random.default_rng(7)):
    c = candidates(rng, n_items=2)
    with pytest.raises(InvalidArgument) as err:
        select_batch(c, "entropy", 13)
    assert err.value.field == "budget"
    with pytest.raises(InvalidArgument) as err:
        select_batch(c, "nope", 1)
    assert err.value.field == "strategy"
    with pytest.raises(InvalidArgument) as err:
        select_batch(c, "score_band", 1, params={"width": 1})
    assert err.value.field == "params.width"
    with pytest.raises(FailedPrecondition):
        select_batch(c, "js_divergence", 1)  # no ensemble members were scored


def test_pixel_budget_counts_area(rng=np.random.default_rng(8)):
    c = candidates(rng)
    chosen = select_batch(c, "combined", 16 * 16 * 4 + 10, unit="pixels")
    assert chosen.budget_used == 16 * 16 * 4 and len(chosen.rows) == 4


def test_class_balanced_interleaves_classes():
    rows = np.arange(6)
    classes = np.array([0, 0, 0, 1, 1, 2])
    assert list(interleave_classes(rows, classes)) == [0, 3, 5, 1, 4, 2]


def test_score_band_keeps_scores_inside(rng=np.random.default_rng(9)):
    c = candidates(rng)
    chosen = select_batch(c, "score_band", 5, params={"low": 0.2, "high": 0.6}, seed=3)
    values = c.scores["combined"][chosen.rows]
    assert ((values >= 0.2) & (values <= 0.6)).all() and (chosen.class_index >= 0).all()


def test_uniform_bottom_n_samples_only_the_worst_class(rng=np.random.default_rng(10)):
    c = candidates(rng, classes=3)
    chosen = select_batch(c, "uniform_bottom_n", 3, params={"bottom_n": 1}, seed=0)
    assert len(set(c.majority_class[chosen.rows])) == 1


def test_uncertainty_diversity_picks_one_per_cluster_among_the_uncertain(rng=np.random.default_rng(11)):
    c = candidates(rng, n_items=40)
    chosen = select_batch(c, "uncertainty_diversity", 8, seed=2)
    median = np.median(c.scores["combined"])
    assert len(set(chosen.rows)) == 8 and (c.scores["combined"][chosen.rows] >= median - 1e-6).all()
    assert all("cluster" in r for r in chosen.reasons)


def test_every_registered_strategy_runs(rng=np.random.default_rng(12)):
    c = candidates(rng)
    for name in STRATEGIES:
        if name in ("vote_entropy", "js_divergence", "ensemble_l2", "self_consistency"):
            continue  # need inputs these candidates lack (checked above)
        assert len(select_batch(c, name, 4, seed=1).rows) == 4, name


def test_propagation_ranks_by_histogram_divergence(rng=np.random.default_rng(13)):
    red = np.zeros((8, 8, 3), np.uint8); red[..., 0] = 250
    reddish = red.copy(); reddish[:2, :, 1] = 200
    blue = np.zeros((8, 8, 3), np.uint8); blue[..., 2] = 250
    h = np.stack([colour_histogram(x) for x in (blue, reddish)])
    assert np.isclose(js_divergence(colour_histogram(red), h)[0], np.log(2))
    found = nearest(colour_histogram(red), h, 2)
    assert [n.index for n in found] == [1, 0]
    assert nearest(colour_histogram(red), h, 2, max_distance=0.5)[0].index == 1
    assert len(nearest(colour_histogram(red), h, 2, max_distance=0.5)) == 1


def test_torch_predictor_gives_members_and_aligned_tta_predictions():
    import torch  # noqa: PLC0415

    from services.selection.predictor import TorchPredictor  # noqa: PLC0415

    torch.manual_seed(0)
    torch.set_num_threads(1)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.Dropout2d(0.5),
                                torch.nn.Conv2d(8, 2, 1))
    image = (np.random.default_rng(0).random((24, 32, 3)) * 255).astype(np.uint8)
    p = TorchPredictor(model, mc_samples=4, tta=(("hflip", 1.0), ("scale", 0.5))).predict(image)
    assert p.probabilities.shape == (2, 24, 32) and p.members.shape == (4, 2, 24, 32)
    assert p.augmented.shape == (2, 2, 24, 32) and p.augment_names == ["hflip", "scale0.5"]
    assert not np.allclose(p.members[0], p.members[1])  # dropout active in the members only
    # a flip-equivariant-by-construction check: the hflip member is the flipped prediction of the flipped image
    flipped = TorchPredictor(model, tta=()).predict(image[:, ::-1].copy()).probabilities[:, :, ::-1]
    assert np.allclose(p.augmented[0], flipped, atol=1e-5)
    restored = Prediction.from_bytes(p.to_bytes())
    assert np.allclose(restored.members, p.members, atol=2e-3) and restored.augment_names == p.augment_names


def _mixed_predictions(rng, n=24):
    """Items of several shapes: 2 or 3 classes, two map sizes, with or without members / augmented."""
    predictions, sizes, images = [], [], []
    for i in range(n):
        k, (h, w) = (3 if i % 3 else 2), ((32, 48) if i % 2 else (20, 30))
        members = np.stack([probs(rng, k, h, w) for _ in range(4)]) if i % 4 else None
        augmented = np.stack([probs(rng, k, h, w) for _ in range(2)]) if i % 5 else None
        predictions.append(Prediction(probs(rng, k, h, w), members, augmented))
        sizes.append((64, 96) if i % 2 else (80, 121))  # maps 2x and 4x coarser than the image
        images.append((rng.random(sizes[-1] + (3,)) * 255).astype(np.uint8))
    return predictions, sizes, images


def _assert_same_scores(expected, got):
    assert len(expected) == len(got)
    for a, b in zip(expected, got):
        assert a.spec == b.spec
        for name in ("segment", "boxes", "area_px", "majority_class", "confidence"):
            assert np.array_equal(getattr(a, name), getattr(b, name)), name
        assert a.scores.keys() == b.scores.keys()
        for h in a.scores:  # the same sums in the same order: bit-identical, not just close
            assert b.scores[h].dtype == np.float32 and np.array_equal(a.scores[h], b.scores[h], equal_nan=True), h


def test_batched_scoring_is_identical_to_scoring_each_item(rng=np.random.default_rng(14)):
    predictions, sizes, images = _mixed_predictions(rng)
    specs = [RegionSpec("image"), RegionSpec("patch", 16), RegionSpec("patch", 3), RegionSpec("superpixel", 12)]
    caches = [{} for _ in predictions]
    batched = score_predictions(predictions, specs, sizes, images, caches)
    empty_patches = 0
    for p, size, image, cache, got in zip(predictions, sizes, images, caches, batched):
        _assert_same_scores(score_prediction(p, specs, size, image), got)
        assert set(cache) == set(specs)  # grids cached per item, as score_prediction does
        grid = patch_grid(p.probabilities.shape[1:], size, 3)
        empty_patches += int((np.bincount(grid.labels.ravel(), minlength=grid.count) == 0).sum())
    assert empty_patches > 0  # 3 px patches on a 4x coarser map: the box-centre fallback was exercised
    # cached grids are reused (superpixels are not recomputed) and give the same scores again
    _assert_same_scores([r for item in batched for r in item],
                        [r for item in score_predictions(predictions, specs, sizes, images, caches) for r in item])


def test_batched_scoring_chunks_do_not_change_results(monkeypatch, rng=np.random.default_rng(15)):
    predictions, sizes, _ = _mixed_predictions(rng, 12)
    whole = score_predictions(predictions, [RegionSpec("patch", 8)], sizes)
    monkeypatch.setattr(scoring, "CHUNK_ELEMENTS", 1)  # one item per chunk
    _assert_same_scores([r[0] for r in whole],
                        [r[0] for r in score_predictions(predictions, [RegionSpec("patch", 8)], sizes)])


def test_heuristics_on_a_stack_equal_each_item(rng=np.random.default_rng(16)):
    p = np.stack([probs(rng, 3, 8, 10) for _ in range(5)])
    members = np.stack([np.stack([probs(rng, 3, 8, 10) for _ in range(4)]) for _ in range(5)])
    members[0, :, :, :2] = members[0, 0, :, :2]  # agreeing members, and ties for the argmax
    members[1, :, 0, 0, 0] = members[1, :, 1, 0, 0] = 0.5
    members[1, :, 2, 0, 0] = 0.0
    augmented = np.stack([np.stack([probs(rng, 3, 8, 10) for _ in range(2)]) for _ in range(5)])
    assert np.array_equal(heuristics.class_argmax(members), members.argmax(axis=-3))
    stacked = heuristics.pixel_maps(p, members, augmented)
    for i in range(5):
        single = heuristics.pixel_maps(p[i], members[i], augmented[i])
        for name, value in single.items():
            assert np.array_equal(stacked[name][i], value), name


def _diverse_reference(features, clusters, seed):
    """The unsampled algorithm: MiniBatchKMeans fitted on every member, nearest member per cluster."""
    from sklearn.cluster import MiniBatchKMeans  # noqa: PLC0415

    kmeans = MiniBatchKMeans(n_clusters=clusters, random_state=seed, n_init=1, max_iter=20,
                             batch_size=max(1024, 3 * clusters), max_no_improvement=3)
    assignment = kmeans.fit_predict(features)
    distance = np.linalg.norm(features - kmeans.cluster_centers_[assignment], axis=1)
    order = np.lexsort((distance, assignment))
    first = np.ones(len(order), bool)
    first[1:] = assignment[order[1:]] != assignment[order[:-1]]
    return order[first], assignment[order[first]]


def test_diversity_without_subsampling_matches_the_unsampled_algorithm(rng=np.random.default_rng(17)):
    for n, clusters in ((300, 20), (2000, 100), (150, 150)):
        features = rng.normal(size=(n, 6)).astype(np.float32)
        assert diversity.fit_sample_size(n, clusters) == n  # small enough: no subsample
        got = diversity.nearest_to_centroids(features, clusters, seed=4)
        if clusters == n:
            assert np.array_equal(got[0], np.arange(n))
            continue
        expected = _diverse_reference(features, clusters, 4)
        assert np.array_equal(got[0], expected[0]) and np.array_equal(got[1], expected[1])


def test_diversity_fits_on_a_bounded_sample_and_picks_one_nearest_member_per_cluster(
        monkeypatch, rng=np.random.default_rng(18)):
    fitted = {}

    class Recording(diversity.MiniBatchKMeans):
        def fit(self, X, *args, **kwargs):
            fitted["points"] = len(X)
            fitted["model"] = self
            return super().fit(X, *args, **kwargs)

    monkeypatch.setattr(diversity, "MiniBatchKMeans", Recording)
    features = rng.normal(size=(6000, 5)).astype(np.float32)
    clusters = 40
    members, cluster = diversity.nearest_to_centroids(features, clusters, seed=7)
    assert fitted["points"] == diversity.fit_sample_size(6000, clusters) == 20 * clusters < 6000
    assert len(set(members.tolist())) == len(members) and len(set(cluster.tolist())) == len(cluster)
    assert len(members) >= clusters - 2  # a centroid may (rarely) own no member of the whole set
    centres = fitted["model"].cluster_centers_
    distances = np.linalg.norm(features[:, None] - centres[None], axis=2)
    assignment = distances.argmin(axis=1)  # every member, not only the fitted sample
    for m, k in zip(members, cluster):
        assert assignment[m] == k
        assert distances[m, k] <= distances[assignment == k, k].min() + 1e-5
    again = diversity.nearest_to_centroids(features, clusters, seed=7)  # seeded: reproducible
    assert np.array_equal(again[0], members)
    # through the strategy: b distinct regions from the uncertain half, one per cluster
    c = candidates(rng, n_items=400)  # 2400 regions, b = 50: 1200 uncertain > 20 b, so sampled
    chosen = select_batch(c, "uncertainty_diversity", 50, seed=2)
    median = np.median(c.scores["combined"])
    clusters_named = [r.split("cluster ")[1] for r in chosen.reasons]
    assert len(set(chosen.rows)) == 50 and (c.scores["combined"][chosen.rows] >= median - 1e-6).all()
    assert len(set(clusters_named)) == len(clusters_named) >= 48
