"""The columnar table of scored regions that strategies select from (one row per region)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from services.common.active_learning.heuristics import HEURISTICS
from services.selection.scoring import RegionScores


@dataclass
class Candidates:
    item_index: np.ndarray  # [n] index into item_ids
    item_ids: list[str]
    segment: np.ndarray  # [n]
    boxes: np.ndarray  # [n, 4] x, y, width, height
    area_px: np.ndarray  # [n]
    majority_class: np.ndarray  # [n]
    confidence: np.ndarray  # [n]
    scores: dict[str, np.ndarray]  # heuristic -> [n] in [0, 1] or NaN
    labelled: np.ndarray  # [n] bool: already labelled by a human
    item_labels: np.ndarray | None = None  # [n_items, K] bool image-level labels (None: none known)
    embeddings: np.ndarray | None = None  # [n_items, D] item embeddings (None: none stored)
    image_sizes: np.ndarray | None = None  # [n_items, 2] height, width

    def __len__(self) -> int:
        return len(self.segment)

    def breakdown(self, row: int) -> dict[str, float]:
        """The heuristic scores of one row, NaN (missing inputs) left out."""
        return {h: float(self.scores[h][row]) for h in HEURISTICS if not np.isnan(self.scores[h][row])}

    def features(self, rows: np.ndarray) -> np.ndarray:
        """Features of ``rows`` for clustering: the item's embedding (standardised) when stored, plus
        the region's normalised box centre and confidence; the heuristic scores when no embedding."""
        items = self.item_index[rows]
        parts = []
        if self.embeddings is not None:
            emb = self.embeddings[items].astype(np.float32)
            parts.append((emb - emb.mean(axis=0)) / (emb.std(axis=0) + 1e-6))
        else:
            parts.append(np.stack([np.nan_to_num(self.scores[h][rows]) for h in HEURISTICS], axis=1))
        if self.image_sizes is not None:
            size = self.image_sizes[items].astype(np.float32)
            centre = self.boxes[rows, :2] + self.boxes[rows, 2:] / 2
            parts.append(centre[:, ::-1] / np.maximum(size, 1))
        parts.append(self.confidence[rows, None])
        return np.concatenate(parts, axis=1).astype(np.float32)

    @classmethod
    def from_scores(cls, item_ids: list[str], per_item: list[RegionScores], classes: int,
                    item_labels: list[list[int]] | None = None, embeddings: np.ndarray | None = None,
                    labelled: np.ndarray | None = None) -> "Candidates":
        """Concatenation of per-item scores (in memory, for the benchmark and tests)."""
        lengths = np.array([len(s) for s in per_item])
        labels = None
        if item_labels is not None and any(item_labels):
            labels = np.zeros((len(item_ids), classes), bool)
            for i, present in enumerate(item_labels):
                labels[i, list(present)] = True
        cat = lambda get: np.concatenate([get(s) for s in per_item])  # noqa: E731
        sizes = np.array([[(s.boxes[:, 1] + s.boxes[:, 3]).max(), (s.boxes[:, 0] + s.boxes[:, 2]).max()]
                          if len(s) else [0, 0] for s in per_item]).reshape(-1, 2)
        n = int(lengths.sum())
        return cls(np.repeat(np.arange(len(item_ids)), lengths), list(item_ids), cat(lambda s: s.segment),
                   cat(lambda s: s.boxes), cat(lambda s: s.area_px), cat(lambda s: s.majority_class),
                   cat(lambda s: s.confidence), {h: cat(lambda s, h=h: s.scores[h]) for h in HEURISTICS},
                   np.zeros(n, bool) if labelled is None else labelled, labels, embeddings, sizes)


def unscored(item_ids: list[str], sizes: list[tuple[int, int]], labelled: list[bool]) -> Candidates:
    """One whole-image row per item with no heuristic score (NaN): what a pool offers before any task
    model has scored it. ``sizes``: (height, width) of each item, 0 when unknown."""
    n = len(item_ids)
    hw = np.asarray(sizes, np.int64).reshape(-1, 2)
    boxes = np.stack([np.zeros(n, np.int64), np.zeros(n, np.int64), hw[:, 1], hw[:, 0]], axis=1) if n \
        else np.zeros((0, 4), np.int64)
    return Candidates(np.arange(n, dtype=np.int64), list(item_ids), np.zeros(n, np.int64), boxes,
                      hw[:, 0] * hw[:, 1], np.zeros(n, np.int64), np.zeros(n, np.float32),
                      {h: np.full(n, np.nan, np.float32) for h in HEURISTICS}, np.asarray(labelled, bool).reshape(n),
                      None, None, hw)
