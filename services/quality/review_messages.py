"""A reviewer's verdict as training data: the ``SessionReviewed`` message the quality service sends the
training service (Celery task ``training.session_reviewed``), which retrains the quality model on it.

The message carries the features this service computed from the session (so the training wing never reads
this wing's tables nor recomputes them) and the true IoU the verdict gives: the corrected mask's IoU with the
submitted one, 1 for an accepted mask. A rejection without a correction gives no IoU and no message.
"""

from __future__ import annotations

from annotation.v1 import training_pb2
from services.quality import features, summary
from services.quality.store import ACCEPTED, CORRECTED

SESSION_REVIEWED = "training.session_reviewed"  # the training worker's task; args (message as proto3 JSON,)


def session_reviewed(row) -> training_pb2.SessionReviewed | None:
    """The message of a reviewed ``ScoredSessionRow``; None when its verdict gives no true IoU."""
    if row.verdict == CORRECTED and row.true_iou is not None:
        true_iou = float(row.true_iou)
    elif row.verdict == ACCEPTED:
        true_iou = 1.0
    else:
        return None
    steps, session = features.extract(row.summary, summary.validate(dict(row.summary)))
    return training_pb2.SessionReviewed(
        project_id=row.project_id, session_id=row.session_id, image_id=row.image_id,
        true_iou=min(max(true_iou, 0.0), 1.0),
        steps=[training_pb2.FeatureRow(values=[float(v) for v in step]) for step in steps],
        session_features=[float(v) for v in session],
        step_feature_names=list(features.STEP_FEATURES), session_feature_names=list(features.SESSION_FEATURES),
        base_probability_below=float(row.probability_below))
