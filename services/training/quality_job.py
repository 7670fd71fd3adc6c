"""One quality-model job: the body of ``training.train`` for ``kind = quality``.

reviewed sessions of the project (``reviews.py``) -> split by image exactly as the snapshots are (a session
is held out when its image is) -> fit an ensemble of click-sequence GRUs on the training sessions
(``models/quality_training.fit``, the quality wing's own training code) -> ROC-AUC of flagging the held-out
sessions whose true IoU is below 0.85, for the candidate and for the current version (the base model:
the deployed model's own scores, which each review carries) -> gate -> promote or reject.

The quality model fits in seconds, so it keeps no checkpoint: a job redelivered after its worker died fits
again from the same seed to the same ensemble; registration finds this operation's version and a decided
version is returned as it is, so nothing is promoted twice. A promoted version is not published to Triton
(the quality service runs its model in process); its weights are ``Ensemble.state()``, the quality
service's weights format.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from sklearn.metrics import roc_auc_score

from services.common.errors import FailedPrecondition
from services.models.quality_gru import DEFAULT_THRESHOLD, Ensemble
from services.models.quality_training import fit, probability_bad
from services.training.job_config import QualityConfig, quality_config
from services.training.job_context import Context, Progress, artifact_path, decide, fraction_reporter, registered
from services.training.registry import Gate
from services.training.reviews import MIN_TRAINING_SESSIONS, Review
from services.training.snapshots import is_heldout

KIND = "quality"


def command(project_id: str, snapshot_id: str, config: QualityConfig) -> str:
    request = {"project_id": project_id, "kind": "MODEL_KIND_QUALITY", "snapshot_id": snapshot_id,
               "quality": asdict(config)}
    return f"annotation.v1.Training/StartTraining {json.dumps(request, sort_keys=True)}"


def _items(reviews: list[Review]) -> list[tuple[np.ndarray, np.ndarray]]:
    return [(r.steps, r.session) for r in reviews]


def _auc(bad: np.ndarray, badness: np.ndarray) -> float:
    return float(roc_auc_score(bad, badness))


def run(ctx: Context, operation_id: str, project_id: str, snapshot_id: str, config_values: dict,
        progress: Progress = lambda done, total, message: None) -> dict:
    report = fraction_reporter(progress)
    existing, decided = registered(ctx, operation_id)
    if decided is not None:
        return decided
    config = quality_config(config_values)
    snapshot = ctx.snapshots.get(project_id, snapshot_id)
    reviews = ctx.reviews.reviews(project_id)
    names = max((r.feature_names for r in reviews), key=lambda n: sum(r.feature_names == n for r in reviews),
                default={})
    reviews = [r for r in reviews if r.feature_names == names]  # one feature set (a later one after a change)
    heldout = [r for r in reviews if is_heldout(snapshot.split_key, r.image_id, snapshot.heldout_percent)]
    train = [r for r in reviews if not is_heldout(snapshot.split_key, r.image_id, snapshot.heldout_percent)]
    bad = np.asarray([r.true_iou < DEFAULT_THRESHOLD for r in heldout])
    if len(train) < MIN_TRAINING_SESSIONS:
        raise FailedPrecondition(f"project {project_id!r} has {len(train)} reviewed sessions in the training split; "
                                 f"the quality model needs {MIN_TRAINING_SESSIONS}: review more annotations",
                                 field="kind")
    if bad.all() or not bad.any():
        raise FailedPrecondition(f"the {len(heldout)} held-out reviewed sessions of project {project_id!r} are all "
                                 f"{'below' if bad.any() else 'at or above'} IoU {DEFAULT_THRESHOLD}: ROC-AUC needs "
                                 "both kinds to gate on", field="kind")
    current = ctx.registry.current(project_id, KIND)

    report(0.05, f"fitting {config.members} networks on {len(train)} reviewed sessions")
    ensemble = fit(_items(train), np.asarray([r.true_iou for r in train], np.float32), members=config.members,
                   epochs=config.epochs, hidden=config.hidden, seed=config.seed, lr=config.learning_rate)
    mv = existing or ctx.registry.register(
        project_id=project_id, kind=KIND, operation_id=operation_id, snapshot_id=snapshot_id,
        parent_version=current.version if current else 0, command=command(project_id, snapshot_id, config),
        config={**asdict(config), "features": names}, class_names=[],
        artifact=lambda version: str(artifact_path(ctx.var_dir, project_id, KIND, version)))
    Path(mv.artifact).parent.mkdir(parents=True, exist_ok=True)
    torch.save(ensemble.state(), mv.artifact)

    report(0.8, f"ROC-AUC on {len(heldout)} held-out reviewed sessions")
    candidate = _auc(bad, probability_bad(ensemble, _items(heldout), DEFAULT_THRESHOLD))
    if current is not None:
        reference = _auc(bad, probability_bad(Ensemble.from_state(torch.load(current.artifact, weights_only=True)),
                                              _items(heldout), DEFAULT_THRESHOLD))
    else:
        reference = _auc(bad, np.asarray([r.base_probability_below for r in heldout]))
    figures = {"roc_auc": candidate, "heldout_sessions": float(len(heldout)), "train_sessions": float(len(train)),
               "heldout_bad_fraction": float(bad.mean())}
    gate = Gate("roc_auc", candidate, reference, current.version if current else 0,
                extra={"current_figures": {"roc_auc": reference}})
    return decide(ctx, mv, figures, gate, report)
