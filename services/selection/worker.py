"""Celery tasks of the selection service, consumed from the ``selection`` queue.

Run: ``celery -A services.selection.worker:app worker -Q selection``.
"""

from __future__ import annotations

from functools import lru_cache

from services.common.celery_app import make_celery, report_progress
from services.common.settings import get_settings
from services.common.storage import make_engine, make_session_factory
from services.selection.pool import PoolStore
from services.selection.pool_scoring import score_pool as score_pool_items
from services.selection.predictor import TritonPredictor
from services.selection.score_store import ScoreStore
from services.selection.scoring import RegionSpec

app = make_celery("selection")


@lru_cache(maxsize=1)
def _stores() -> tuple[PoolStore, ScoreStore]:
    sessions = make_session_factory(make_engine(get_settings().resolved_database_url))
    return PoolStore(sessions), ScoreStore(sessions)


@app.task(name="selection.score_pool", bind=True)
def score_pool(self, project_id: str, pool_id: str, specs: list[list], force: bool = False,
               triton_model: str = "") -> dict:
    """Scores every predicted item of a pool per region spec ``[granularity, scale]``; idempotent."""
    pools, scores = _stores()
    predictor = TritonPredictor(get_settings().triton_grpc_url, triton_model) if triton_model else None
    return score_pool_items(pools, scores, project_id, pool_id, [RegionSpec(g, int(s)) for g, s in specs],
                            force=force, predictor=predictor,
                            progress=lambda done, total, message: report_progress(self, done, total, message))
