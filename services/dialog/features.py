"""Candidate features read by the cost and acceptance models (Konyushkova et al., CVPR 2018, IAD-Prob:
prediction score, relative size, score statistics; plus the mask's boundary complexity).

Features are a plain ``{name: float}`` mapping; models read the names they know and treat a missing
one as its neutral value, so clients may send only what they have.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

# Features the models use, with the neutral value assumed when a candidate lacks one.
FEATURES: dict[str, float] = {
    "proposal_score": 0.5,  # the model's confidence in the proposal, [0, 1]
    "mean_foreground_probability": 0.5,
    "mean_confidence": 0.5,
    "uncertain_fraction": 0.1,
    "relative_size": 0.2,  # proposal area / image area
    "boundary_complexity": 1.5,  # perimeter^2 / (4 pi area); 1 for a disk
    "components": 1.0,
    "border_fraction": 0.0,  # share of the image border the proposal touches
    "selection_score": 0.5,
    "refine_agreement": 0.8,  # IoU of the deployed (refined) mask with the network's own mask
    "proposal_agreement": 0.8,  # IoU between proposals from different automatic seeds
}


def mask_features(mask: np.ndarray) -> dict[str, float]:
    """Shape features of a boolean proposal mask."""
    mask = np.asarray(mask, bool)
    area = int(mask.sum())
    if area == 0:
        return {"relative_size": 0.0, "boundary_complexity": 0.0, "components": 0.0, "border_fraction": 0.0}
    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    perimeter = sum(cv2.arcLength(c, True) for c in contours)
    border = np.concatenate([mask[0], mask[-1], mask[:, 0], mask[:, -1]])
    return {"relative_size": area / mask.size,
            "boundary_complexity": perimeter**2 / (4 * math.pi * area),
            "components": float(len(contours)),
            "border_fraction": float(border.mean())}


def vector(features: dict[str, float], names: tuple[str, ...]) -> np.ndarray:
    """The named features in order, neutral values filling the gaps, as float64."""
    return np.asarray([float(features.get(n, FEATURES.get(n, 0.0))) for n in names], dtype=np.float64)
