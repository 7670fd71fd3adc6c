"""Fitting the quality model (an ensemble of ``quality_gru.ClickGRU``) on featurised sessions with their true
IoU, shared by the quality wing's offline training (``services/quality/train.py``) and the training wing's
retraining on a project's reviewed sessions. The features are the quality service's
(``services/quality/features.py``); this code only needs their arrays.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from services.models.quality_gru import THRESHOLDS, ClickGRU, Ensemble


def fit(items: list[tuple[np.ndarray, np.ndarray]], ious: np.ndarray, members: int = 5, epochs: int = 60,
        hidden: int = 16, seed: int = 0, lr: float = 3e-3, weight_decay: float = 1e-3) -> Ensemble:
    """An ensemble of ``members`` GRUs (different seeds) on features ``items`` with true IoUs ``ious``."""
    torch.set_num_threads(1)
    all_steps = np.concatenate([s for s, _ in items])
    sessions = np.stack([g for _, g in items])
    norm = {"step_mean": all_steps.mean(0), "step_std": all_steps.std(0) + 1e-3,
            "session_mean": sessions.mean(0), "session_std": sessions.std(0) + 1e-3}
    shell = Ensemble([], norm)
    steps, lengths, session = shell.tensors(items)
    target_iou = torch.tensor(ious, dtype=torch.float32)
    target_bad = torch.tensor(np.asarray(ious)[:, None] < np.asarray(THRESHOLDS)[None, :], dtype=torch.float32)
    networks = []
    for member in range(members):
        generator = torch.Generator().manual_seed(seed * 1000 + member)
        torch.manual_seed(seed * 1000 + member)
        net = ClickGRU(steps.shape[2], session.shape[1], hidden)
        optimiser = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=weight_decay)
        schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, epochs)
        bce = nn.BCEWithLogitsLoss()
        net.train()
        for _ in range(epochs):
            for batch in torch.randperm(len(items), generator=generator).split(32):
                out = net(steps[batch], lengths[batch], session[batch])
                loss = bce(out[:, 0], target_iou[batch]) + bce(out[:, 1:], target_bad[batch])
                optimiser.zero_grad()
                loss.backward()
                optimiser.step()
            schedule.step()
        networks.append(net)
    return Ensemble(networks, norm)


def probability_bad(ensemble: Ensemble, items: list[tuple[np.ndarray, np.ndarray]], threshold: float) -> np.ndarray:
    """P(IoU < ``threshold``) of each item from the grid head of that threshold (one of ``THRESHOLDS``)."""
    return ensemble.predict(items)[:, 1 + THRESHOLDS.index(threshold)]
