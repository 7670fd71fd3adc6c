"""Label propagation candidates (Belharbi et al., WACV 2021, "Deep active learning for joint
classification & segmentation with weak annotator").

For a newly labelled image, its k nearest unlabelled images of the same class, by the
Jensen-Shannon divergence between normalised colour histograms, plus (optionally) a weighted
Euclidean distance between model embeddings. They are offered as pseudo-label candidates.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

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
