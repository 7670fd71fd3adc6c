"""Starting a training job, shared by the gRPC API (StartTraining) and the automatic trigger (the worker's
``annotation_submitted``), so both refuse the same things the same way. Plain code: enqueueing and
asking whether a job still runs are callables the transport passes in.

- ``check_config``: the kind's configuration from request values (INVALID_ARGUMENT naming the field).
- ``start``: freeze (or find) the snapshot, record the job (a second one of the project and kind while
  one runs is FAILED_PRECONDITION naming ``kind`` and the running operation), create its Operation and
  enqueue ``training.train`` with the operation id as the Celery task id.
- ``trigger``: after an accepted annotation, start the kinds of the settings whose last job (however it
  ended: a failed or cancelled one is not retried until N more annotations arrive) froze at least N fewer
  accepted annotations than the project has now.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field

from services.common.errors import FailedPrecondition, InvalidArgument
from services.common.operations import OperationRecord, OperationStore
from services.training.annotations import ACCEPTED, AnnotationStore
from services.training.job_config import interactive_config, quality_config
from services.training.jobs import JobStore
from services.training.reviews import MIN_TRAINING_SESSIONS, ReviewStore
from services.training.snapshots import Snapshot, SnapshotStore, check_trainable, is_heldout
from services.training.task_config import task_config
from services.training.tasks import TRAIN

log = logging.getLogger(__name__)

TRAINED_KINDS = ("interactive", "task", "quality")
# (project_id, kind, snapshot_id, config) -> enqueue training.train with task id = operation id
Send = Callable[[str, str, str, str, dict], None]


def check_config(kind: str, values: dict) -> dict:
    """The job's configuration for ``kind`` from the request's values of that kind (0: default)."""
    if kind == "task":
        return asdict(task_config(values))
    if kind == "interactive":
        return asdict(interactive_config(values))
    if kind == "quality":
        return asdict(quality_config(values))
    raise InvalidArgument("kind", f"{kind.upper()} models are not trained yet; one of "
                          f"{', '.join(k.upper() for k in TRAINED_KINDS)}", reason="UNSUPPORTED")


@dataclass
class Starter:
    annotations: AnnotationStore
    snapshots: SnapshotStore
    jobs: JobStore
    operations: OperationStore
    send: Send
    is_finished: Callable[[str], bool]
    heldout_percent: int
    reviews: ReviewStore | None = None  # to refuse a quality job without the data at once, not in the worker
    split_keys: Mapping[str, str] = field(default_factory=dict)  # TRAINING_SPLIT_KEYS

    def split_key(self, project_id: str) -> str:
        return self.split_keys.get(project_id, project_id)

    def freeze(self, project_id: str) -> tuple[Snapshot, bool]:
        """The project's snapshot now, with the configured split (``SnapshotStore.freeze``)."""
        return self.snapshots.freeze(project_id, self.heldout_percent, self.split_key(project_id))

    def start(self, project_id: str, kind: str, snapshot_id: str, config: dict) -> tuple[OperationRecord, Snapshot]:
        if snapshot_id:
            snapshot = self.snapshots.get(project_id, snapshot_id)
        else:
            snapshot, _ = self.freeze(project_id)
        check_trainable(snapshot)
        if kind == "quality" and self.reviews is not None and self.reviews.count(project_id) < MIN_TRAINING_SESSIONS:
            raise FailedPrecondition(f"project {project_id!r} has {self.reviews.count(project_id)} reviewed sessions; "
                                     f"the quality model needs at least {MIN_TRAINING_SESSIONS} in the training split: "
                                     "review more annotations", field="kind")
        op_id = uuid.uuid4().hex
        self.jobs.start(op_id, project_id, kind, snapshot.snapshot_id, config, self.is_finished)
        try:
            record = self.operations.create(op_id, TRAIN, project_id)
            self.send(op_id, project_id, kind, snapshot.snapshot_id, config)
        except BaseException:
            self.jobs.finish(op_id, "not enqueued")
            raise
        return record, snapshot

    def trigger(self, project_id: str, every: int, kinds: list[str]) -> list[str]:
        """Operation ids of the jobs started because the project has ``every`` more accepted annotations than
        its last job of a kind trained on (none running). A refused start is logged, not raised: the next
        annotation tries again."""
        if every <= 0:
            return []
        accepted = self.annotations.count(project_id, ACCEPTED)
        started = []
        for kind in kinds:
            running = self.jobs.running(project_id, kind)
            if running is not None and not self.is_finished(running.operation_id):
                continue  # checked first: no snapshot is frozen per annotation while a job runs
            last = self.jobs.latest(project_id, kind)
            trained_on = self.snapshots.get(project_id, last.snapshot_id).annotation_count if last else 0
            if accepted - trained_on < every or not self._both_splits(project_id):
                continue
            try:
                record, snapshot = self.start(project_id, kind, "", check_config(kind, {}))
            except FailedPrecondition as exc:
                log.info("training trigger: %s job of project %s not started: %s", kind, project_id, exc.message)
                continue
            log.info("training trigger: %s job %s of project %s on snapshot %s (%d accepted annotations)",
                     kind, record.id, project_id, snapshot.snapshot_id, accepted)
            started.append(record.id)
        return started

    def _both_splits(self, project_id: str) -> bool:
        """Whether the project's human annotations cover a training and a held-out image (checked before
        freezing: a snapshot that cannot be gated is not written once per annotation)."""
        images = {r.image_id for r in self.annotations.accepted(project_id) if not r.pseudo_label}
        held = sum(is_heldout(self.split_key(project_id), image, self.heldout_percent) for image in images)
        return 0 < held < len(images)
