"""How well a score ranks annotations: Spearman with the true IoU, ROC-AUC and precision at the worst
10% for flagging bad masks (true IoU below the threshold)."""

from __future__ import annotations

import numpy as np
from scipy.stats import spearmanr
from sklearn.metrics import roc_auc_score


def ranking_metrics(quality: np.ndarray, true_iou: np.ndarray, threshold: float = 0.85,
                    worst: float = 0.10, badness: np.ndarray | None = None) -> dict:
    """``quality``: higher means a better mask (the predicted IoU, minus the click count, ...); Spearman
    reads it. ``badness`` (default ``-quality``), higher means flag it: ROC-AUC and the worst 10% read it."""
    quality, true_iou = np.asarray(quality, float), np.asarray(true_iou, float)
    badness = -quality if badness is None else np.asarray(badness, float)
    bad = true_iou < threshold
    k = max(1, int(round(worst * len(quality))))
    order = np.argsort(-badness, kind="stable")  # worst first
    both = bad.any() and not bad.all()
    constant = np.ptp(quality) == 0 or np.ptp(true_iou) == 0
    return {  # None where a figure is undefined (a constant score, one class only)
        "spearman": None if constant else round(float(spearmanr(quality, true_iou).statistic), 4),
        "roc_auc": round(float(roc_auc_score(bad, badness)), 4) if both else None,
        "precision_at_worst_10pct": round(float(bad[order[:k]].mean()), 4),
        "sessions": int(len(quality)),
        "bad_fraction": round(float(bad.mean()), 4),
    }
