"""Uncertainty + diversity: cluster the most uncertain candidates, take the one nearest each centroid.

Take the most uncertain fraction (half by default) of the candidates, cluster their features into
``b`` clusters (b = the round's budget) with scikit-learn's MiniBatchKMeans, and select, per cluster,
the member nearest to the centroid; the batch is ordered by uncertainty. So a batch covers the
uncertain part of the pool instead of b near-duplicates of its single most uncertain mode.

Scale: k-means is fitted on a bounded, seeded uniform subsample of the uncertain set
(``FIT_POINTS_PER_CLUSTER`` x b points, at most ``MAX_FIT_POINTS`` and at least 3 x b; all of them when
the set is that small, which gives exactly the unsampled result). Every uncertain candidate is then
assigned to its nearest centroid (``MiniBatchKMeans.predict``: a chunked, multi-threaded nearest-centroid
search, memory bounded by its chunks), so the member nearest each centroid is still chosen from the whole
uncertain set. Cost: fit O(sample x b), assignment O(n x b), instead of many k-means passes over all n.
The fit runs on one thread: its mini-batch steps are too small for threads to pay off.
"""

from __future__ import annotations

import numpy as np
from sklearn.cluster import MiniBatchKMeans
from threadpoolctl import threadpool_limits

FIT_POINTS_PER_CLUSTER = 20
MAX_FIT_POINTS = 100_000
FIT_THREADS: int | None = 1  # None: the thread pools' defaults


def top_fraction(rows: np.ndarray, scores: np.ndarray, fraction: float, at_least: int) -> np.ndarray:
    """The ``fraction`` of ``rows`` with the highest ``scores`` (at least ``at_least`` of them)."""
    keep = min(len(rows), max(at_least, int(np.ceil(len(rows) * fraction))))
    if keep >= len(rows):
        return rows
    return rows[np.argpartition(-scores, keep - 1)[:keep]]


def fit_sample_size(n: int, clusters: int) -> int:
    return min(n, max(3 * clusters, min(FIT_POINTS_PER_CLUSTER * clusters, MAX_FIT_POINTS)))


def nearest_to_centroids(features: np.ndarray, clusters: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(member index nearest each centroid, its cluster id) for the non-empty clusters."""
    clusters = min(clusters, len(features))
    if clusters == len(features):
        return np.arange(len(features)), np.arange(len(features))
    size = fit_sample_size(len(features), clusters)
    sample = features
    if size < len(features):
        sample = features[np.sort(np.random.default_rng(seed).choice(len(features), size, replace=False))]
    kmeans = MiniBatchKMeans(n_clusters=clusters, random_state=seed, n_init=1, max_iter=20,
                             batch_size=max(1024, 3 * clusters), max_no_improvement=3, compute_labels=False)
    with threadpool_limits(FIT_THREADS):  # small steps: threads cost more than they save (2x CPU, measured)
        kmeans.fit(sample)
    assignment = kmeans.predict(features)
    distance = np.linalg.norm(features - kmeans.cluster_centers_[assignment], axis=1)
    order = np.lexsort((distance, assignment))  # by cluster, nearest first
    first = np.ones(len(order), bool)
    first[1:] = assignment[order[1:]] != assignment[order[:-1]]
    return order[first], assignment[order[first]]


def select_diverse(rows: np.ndarray, scores: np.ndarray, features_of, budget: int, seed: int,
                   fraction: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    """(selected rows ordered by score, their cluster ids); ``features_of(rows)`` gives features."""
    uncertain = top_fraction(rows, scores[rows], fraction, budget)
    members, cluster = nearest_to_centroids(features_of(uncertain), budget, seed)
    chosen = uncertain[members]
    order = np.argsort(-scores[chosen], kind="stable")
    return chosen[order], cluster[order]
