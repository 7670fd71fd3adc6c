"""Celery tasks of the training service, consumed from the ``training`` queue.

Run: ``celery -A services.training.worker:app worker -Q training``.

- ``training.annotation_submitted``: one submitted annotation (``annotation.v1.AnnotationSubmitted`` as
  proto3 JSON, ``services/common/annotation_events.py``), stored for later snapshots; idempotent by id.
  Sent once per submission by the owner of the loop's fan-out (docs/training.md, "Who sends the event").
  A newly stored human annotation may trigger jobs (``starting.Starter.trigger``: every
  ``TRAINING_TRIGGER_EVERY`` accepted annotations, the kinds of ``TRAINING_TRIGGER_KINDS``).
- ``training.session_reviewed``: a reviewer's verdict with the session's true IoU and the quality model's
  inputs (``annotation.v1.SessionReviewed`` as proto3 JSON, ``reviews.py``), what the quality job trains on;
  the latest verdict on a session wins.
- ``training.train``: a training job (``task_job.run``, ``interactive_job.run`` or ``quality_job.run`` by
  kind), progress through
  Operations, resumed from its checkpoint when redelivered after the worker died.
"""

from __future__ import annotations

from functools import lru_cache

from redis import Redis
from sqlalchemy.exc import OperationalError

from services.common import annotation_events
from services.common.celery_app import make_celery, report_progress
from services.common.operations import OperationStore
from services.common.settings import get_settings
from services.common.storage import make_engine, make_session_factory
from services.training import reviews
from services.training.annotations import AnnotationStore, annotation_of
from services.training.jobs import JobStore
from services.training.publishing import TritonPublisher, click_base, publisher_for
from services.training.registry import Registry
from services.training.reviews import ReviewStore
from services.training.snapshots import SnapshotStore
from services.training.starting import Starter
from services.training.tasks import ANNOTATION_SUBMITTED, SESSION_REVIEWED, TRAIN, TRAINING_QUEUE

TASK_MODEL_PROMOTED = "selection.task_model_promoted"  # args (project id, Triton model, class names, model version)
app = make_celery("training")
FINISHED = ("SUCCESS", "FAILURE", "REVOKED")


@lru_cache(maxsize=1)
def _stores() -> tuple[AnnotationStore, SnapshotStore, Registry, JobStore, ReviewStore]:
    sessions = make_session_factory(make_engine(get_settings().resolved_database_url))
    annotations = AnnotationStore(sessions)
    return (annotations, SnapshotStore(sessions, annotations), Registry(sessions), JobStore(sessions),
            ReviewStore(sessions))


@lru_cache(maxsize=1)
def _starter() -> Starter:
    settings = get_settings()
    annotations, snapshots, _, jobs, _ = _stores()

    def send(op_id: str, project_id: str, kind: str, snapshot_id: str, config: dict) -> None:
        app.send_task(TRAIN, task_id=op_id, queue=TRAINING_QUEUE, args=[project_id, kind, snapshot_id, config])

    # The same Operations records as the training server's, so GetOperation there follows a triggered job.
    operations = OperationStore(Redis.from_url(settings.redis_url), "training", settings.operation_ttl_s)
    return Starter(annotations, snapshots, jobs, operations, send,
                   lambda other: app.AsyncResult(other).state in FINISHED, settings.training_heldout_percent,
                   split_keys=settings.training_split_keys)


def publisher() -> TritonPublisher:
    return publisher_for(get_settings(), lambda task, queue, args: app.send_task(task, queue=queue, args=args))


@app.task(name=ANNOTATION_SUBMITTED, autoretry_for=(OperationalError,), retry_backoff=True, max_retries=5)
def annotation_submitted(payload: dict) -> dict:
    """Stores one submitted annotation; a malformed event fails the task (INVALID_ARGUMENT in its error).
    A new human annotation may start training jobs (their operation ids in ``triggered``)."""
    event = annotation_events.decode(payload)
    recorded = _stores()[0].record(annotation_of(event))
    triggered = []
    if recorded and not event.pseudo_label:
        settings = get_settings()
        kinds = [k for k in settings.training_trigger_kinds.split(",") if k]
        triggered = _starter().trigger(event.project_id, settings.training_trigger_every, kinds)
    return {"project_id": event.project_id, "annotation_id": event.annotation_id, "recorded": recorded,
            "triggered": triggered}


@app.task(name=SESSION_REVIEWED, autoretry_for=(OperationalError,), retry_backoff=True, max_retries=5)
def session_reviewed(payload: dict) -> dict:
    """Stores one reviewed session; a malformed message fails the task (INVALID_ARGUMENT in its error)."""
    message = reviews.decode(payload)
    _stores()[4].record(message)
    return {"project_id": message.project_id, "session_id": message.session_id}


# Minutes of training on CPU: the default limits (10 min) are for short tasks; these stay under the hour of
# visibility timeout, past which Redis would hand a running job to a second worker.
@app.task(name=TRAIN, bind=True, soft_time_limit=3000, time_limit=3300)
def train(self, project_id: str, kind: str, snapshot_id: str, config: dict) -> dict:
    """One training job; its row stops blocking the project's next job however it ends."""
    # torch loads when a job runs, not at worker import
    from services.training import interactive_job, job_context, quality_job, task_job  # noqa: PLC0415

    _, snapshots, registry, jobs, review_store = _stores()
    jobs_by_kind = {task_job.KIND: task_job.run, interactive_job.KIND: interactive_job.run,
                    quality_job.KIND: quality_job.run}
    try:
        if kind not in jobs_by_kind:
            raise ValueError(f"training {kind} models is not built")
        settings = get_settings()
        context = job_context.Context(snapshots, registry, publisher(), settings.var_dir,
                                      click_base=click_base(settings),
                                      reviews=review_store)
        out = jobs_by_kind[kind](context, self.request.id, project_id, snapshot_id, config,
                                 lambda done, total, message: report_progress(self, done, total, message))
    except Exception:
        jobs.finish(self.request.id, "failed")
        raise
    jobs.finish(self.request.id, out["state"].lower())
    if kind == task_job.KIND and out["state"] == "PROMOTED":
        # selection re-scores the project's pools with the promoted model (its next picks follow it)
        promoted = registry.by_operation(self.request.id)
        app.send_task(TASK_MODEL_PROMOTED, queue="selection",
                      args=[project_id, out["triton_model_name"], list(promoted.class_names),
                            f'{out["triton_model_name"]}:{out["model_version"]}'])
    return out
