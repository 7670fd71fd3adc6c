"""Label propagation candidates (Belharbi et al., WACV 2021, "Deep active learning for joint
classification & segmentation with weak annotator").

For a newly labelled image, its k nearest unlabelled images of the same class, by the
Jensen-Shannon divergence between normalised colour histograms, plus (optionally) a weighted
Euclidean distance between model embeddings. They are offered as pseudo-label candidates.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from services.common.errors import FailedPrecondition, NotFound
from services.common.image_files import load_image

BINS = 8  # per RGB channel: a joint 8x8x8 = 512-bin histogram


def colour_histogram(image: np.ndarray, bins: int = BINS) -> np.ndarray:
    """Normalised joint RGB histogram of an (H, W, 3) uint8 image (greyscale is replicated)."""
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=2)
    q = (image[..., :3].astype(np.int64) * bins) // 256
    index = (q[..., 0] * bins + q[..., 1]) * bins + q[..., 2]
    hist = np.bincount(index.ravel(), minlength=bins**3).astype(np.float64)
    return hist / hist.sum()


def js_divergence(h: np.ndarray, others: np.ndarray) -> np.ndarray:
    """JS divergence (natural log, in [0, ln 2]) between histogram ``h`` [B] and each row of ``others`` [N, B]."""
    m = 0.5 * (h[None] + others)

    def kl(p, q):
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(p > 0, p * np.log(p / np.where(q > 0, q, 1)), 0.0).sum(axis=-1)

    return np.clip(0.5 * kl(np.broadcast_to(h, others.shape), m) + 0.5 * kl(others, m), 0.0, np.log(2))


@dataclass(frozen=True)
class Neighbour:
    index: int  # row of the candidate arrays
    histogram_js: float
    feature_distance: float
    distance: float


def nearest(source_hist: np.ndarray, hists: np.ndarray, k: int, source_emb: np.ndarray | None = None,
            embs: np.ndarray | None = None, feature_weight: float = 0.0, max_distance: float = 0.0) -> list[Neighbour]:
    """The k candidates nearest the source, nearest first; distance = JS + feature_weight * L2."""
    if len(hists) == 0:
        return []
    js = js_divergence(source_hist, hists)
    feat = np.zeros(len(hists))
    if feature_weight > 0 and source_emb is not None and embs is not None:
        feat = np.linalg.norm(embs - source_emb[None], axis=1)
    distance = js + feature_weight * feat
    order = np.argsort(distance, kind="stable")[:k]
    if max_distance > 0:
        order = order[distance[order] <= max_distance]
    return [Neighbour(int(i), float(js[i]), float(feat[i]), float(distance[i])) for i in order]


def _histogram(row) -> np.ndarray | None:
    """The item's stored histogram, else the histogram of its image (None: not readable)."""
    if row.histogram is not None:
        return np.frombuffer(row.histogram, np.float32).astype(np.float64)
    image = load_image(row.uri)
    return None if image is None else colour_histogram(image)


def _embedding(row) -> np.ndarray | None:
    return None if row.embedding is None else np.frombuffer(row.embedding, np.float32)


def find_candidates(rows: Sequence[Any], source_item_id: str, class_index: int, k: int,
                    feature_weight: float = 0.0, max_distance: float = 0.0,
                    pool_id: str = "") -> list[tuple[Any, Neighbour]]:
    """Propagation candidates of ``source_item_id`` among ``rows`` (``ScoreStore.item_features``): the
    unlabelled items other than the source whose image labels or predicted classes contain
    ``class_index``, nearest first, as (row, neighbour) pairs.

    Raises NotFound when the source is not among ``rows`` and FailedPrecondition when its histogram can
    be neither read from the store nor computed from its image. Candidates whose histogram cannot be had
    are left out. Embeddings count only when ``feature_weight`` > 0 and every candidate and the source
    has one.
    """
    source = {r.item_id: r for r in rows}.get(source_item_id)
    if source is None:
        raise NotFound(f"no item {source_item_id!r} in pool {pool_id!r}", field="item_id")
    source_hist = _histogram(source)
    if source_hist is None:
        raise FailedPrecondition("the item's image is not readable and the pool was not scored with it",
                                 field="item_id")
    pool_rows = [r for r in rows if r.item_id != source_item_id and not r.labelled
                 and (class_index in (r.image_labels or []) or class_index in (r.present_classes or []))]
    hists = [(r, _histogram(r)) for r in pool_rows]
    hists = [(r, h) for r, h in hists if h is not None]
    embs = None
    if feature_weight > 0 and _embedding(source) is not None and all(r.embedding for r, _ in hists):
        embs = np.stack([_embedding(r) for r, _ in hists]) if hists else None
    found = nearest(source_hist, np.stack([h for _, h in hists]) if hists else np.zeros((0, 1)), k,
                    _embedding(source), embs, feature_weight, max_distance)
    return [(hists[n.index][0], n) for n in found]
