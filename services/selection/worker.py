"""Celery tasks of the selection service, consumed from the ``selection`` queue.

Run: ``celery -A services.selection.worker:app worker -Q selection``.

- ``selection.score_pool``: scores a pool's predicted items (StartScoring, or SelectBatch asked for a region
  spec the pool had no scores for: ``region_demand.py``).
- ``selection.task_model_promoted``: the training service promoted a task model: the project's pools are
  predicted again through Triton with it and re-scored.
- ``selection.annotation_submitted``: the loop's event of a submitted annotation (``AnnotationSubmitted``):
  its image enters the project's pools as labelled (``annotations.py``); idempotent by annotation id.
"""

from __future__ import annotations

from functools import lru_cache

from sqlalchemy.exc import IntegrityError, OperationalError

from services.common import annotation_events
from services.common.celery_app import make_celery, report_progress
from services.common.settings import get_settings
from services.common.storage import make_engine, make_session_factory
from services.selection.annotations import record_annotation
from services.selection.pool import PoolStore
from services.selection.pool_scoring import rescore_project
from services.selection.pool_scoring import score_pool as score_pool_items
from services.selection.predictor import TritonPredictor
from services.selection.region_demand import RegionDemand
from services.selection.score_store import ScoreStore
from services.selection.scoring import RegionSpec

app = make_celery("selection")


@lru_cache(maxsize=1)
def _sessions():
    return make_session_factory(make_engine(get_settings().resolved_database_url))


def _stores() -> tuple[PoolStore, ScoreStore]:
    return PoolStore(_sessions()), ScoreStore(_sessions())


@app.task(name="selection.score_pool", bind=True)
def score_pool(self, project_id: str, pool_id: str, specs: list[list], force: bool = False,
               triton_model: str = "") -> dict:
    """Scores every predicted item of a pool per region spec ``[granularity, scale]``; idempotent."""
    pools, scores = _stores()
    predictor = TritonPredictor(get_settings().triton_grpc_url, triton_model) if triton_model else None
    return score_pool_items(pools, scores, project_id, pool_id, [RegionSpec(g, int(s)) for g, s in specs],
                            force=force, predictor=predictor,
                            progress=lambda done, total, message: report_progress(self, done, total, message))


@app.task(name="selection.task_model_promoted", bind=True)
def task_model_promoted(self, project_id: str, triton_model: str, class_names: list[str],
                        model_version: str = "") -> dict:
    """The training service promoted a task model of the project: every pool of the project that shares a label
    with it is predicted again through Triton (plain pass, flips, MC-dropout members; the model's classes laid
    out on the pool's by name) and re-scored for the image and for every region spec it had scores for or was
    asked for, so the next picks follow the new model. A pool without a label in common is left as it is (named
    in the result). ``model_version`` (``<triton model>:<version>``; absent from older messages) is stored with
    the predictions and scores, so a selected region names the model its score came from."""
    model_version = model_version or triton_model
    predictor = TritonPredictor(get_settings().triton_grpc_url, triton_model, model_version=model_version)
    return {"triton_model": triton_model, "model_version": model_version, **rescore_project(
        *_stores(), RegionDemand(_sessions()), project_id, predictor, list(class_names),
        progress=lambda done, total, message: report_progress(self, done, total, message))}


# IntegrityError: a concurrent delivery of the same event recorded it first; the retry finds it recorded.
@app.task(name="selection.annotation_submitted", autoretry_for=(OperationalError, IntegrityError),
          retry_backoff=True, max_retries=5)
def annotation_submitted(payload: dict) -> dict:
    """Labels the submitted annotation's image in the project's pools (what ReportLabels does for a client);
    a malformed event fails the task (INVALID_ARGUMENT naming the field)."""
    return record_annotation(*_stores(), annotation_events.decode(payload, label_required=False))
