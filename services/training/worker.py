"""Celery tasks of the training service, consumed from the ``training`` queue.

Run: ``celery -A services.training.worker:app worker -Q training``.

- ``training.annotation_submitted``: one submitted annotation (``annotation.v1.AnnotationSubmitted`` as
  proto3 JSON, ``services/common/annotation_events.py``), stored for later snapshots; idempotent by id.
  Sent once per submission by the owner of the loop's fan-out (docs/training.md, "Who sends the event").
- ``training.train``: a training job (``task_job.run`` for the task model), progress through Operations,
  resumed from its checkpoint when redelivered after the worker died.
"""

from __future__ import annotations

from functools import lru_cache

from sqlalchemy.exc import OperationalError

from services.common import annotation_events
from services.common.celery_app import make_celery, report_progress
from services.common.settings import get_settings
from services.common.storage import make_engine, make_session_factory
from services.training.annotations import AnnotationStore, annotation_of
from services.training.jobs import JobStore
from services.training.publishing import TritonPublisher
from services.training.registry import Registry
from services.training.snapshots import SnapshotStore
from services.training.tasks import ANNOTATION_SUBMITTED, TRAIN

app = make_celery("training")


@lru_cache(maxsize=1)
def _stores() -> tuple[AnnotationStore, SnapshotStore, Registry, JobStore]:
    sessions = make_session_factory(make_engine(get_settings().resolved_database_url))
    annotations = AnnotationStore(sessions)
    return annotations, SnapshotStore(sessions, annotations), Registry(sessions), JobStore(sessions)


def publisher() -> TritonPublisher:
    settings = get_settings()
    return TritonPublisher(settings.resolved_model_repository,
                           settings.triton_grpc_url if settings.training_publish else "")


@app.task(name=ANNOTATION_SUBMITTED, autoretry_for=(OperationalError,), retry_backoff=True, max_retries=5)
def annotation_submitted(payload: dict) -> dict:
    """Stores one submitted annotation; a malformed event fails the task (INVALID_ARGUMENT in its error)."""
    event = annotation_events.decode(payload)
    recorded = _stores()[0].record(annotation_of(event))
    return {"project_id": event.project_id, "annotation_id": event.annotation_id, "recorded": recorded}


# Minutes of training on CPU: the default limits (10 min) are for short tasks; these stay under the hour of
# visibility timeout, past which Redis would hand a running job to a second worker.
@app.task(name=TRAIN, bind=True, soft_time_limit=3000, time_limit=3300)
def train(self, project_id: str, kind: str, snapshot_id: str, config: dict) -> dict:
    """One training job; its row stops blocking the project's next job however it ends."""
    from services.training import task_job  # noqa: PLC0415 - torch loads when a job runs, not at worker import

    _, snapshots, registry, jobs = _stores()
    try:
        if kind != task_job.KIND:
            raise ValueError(f"training {kind} models is not built yet")
        context = task_job.Context(snapshots, registry, publisher(), get_settings().var_dir)
        out = task_job.run(context, self.request.id, project_id, snapshot_id, config,
                           lambda done, total, message: report_progress(self, done, total, message))
    except Exception:
        jobs.finish(self.request.id, "failed")
        raise
    jobs.finish(self.request.id, out["state"].lower())
    return out
