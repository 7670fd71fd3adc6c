"""gRPC adapter of ``annotation.v1.Training``: proto messages <-> snapshots, jobs and the registry.

Run: ``python -m services.training.server``.
"""

from __future__ import annotations

import json

import grpc
from google.protobuf import json_format

from annotation.v1 import common_pb2, training_pb2, training_pb2_grpc
from services.common.errors import InvalidArgument, NotFound
from services.common.grpc_server import Kit, serve
from services.common.proto_time import to_timestamp
from services.training.annotations import AnnotationStore
from services.training.jobs import JobStore
from services.training.promotion import promote, rollback
from services.training.publishing import publisher_for
from services.training.registry import Registry, check_kind
from services.training.reviews import ReviewStore
from services.training.snapshots import Entry, Snapshot, SnapshotStore
from services.training.starting import Starter, check_config
from services.training.tasks import TRAIN, TRAINING_QUEUE

KINDS = {training_pb2.MODEL_KIND_INTERACTIVE: "interactive", training_pb2.MODEL_KIND_TASK: "task",
         training_pb2.MODEL_KIND_QUALITY: "quality"}
KIND_ENUMS = {name: value for value, name in KINDS.items()}
STATES = {"candidate": training_pb2.MODEL_STATE_CANDIDATE, "promoted": training_pb2.MODEL_STATE_PROMOTED,
          "rejected": training_pb2.MODEL_STATE_REJECTED, "rolled_back": training_pb2.MODEL_STATE_ROLLED_BACK}
FINISHED = ("SUCCESS", "FAILURE", "REVOKED")
MAX_PAGE = 1000


def _kind(value: int, field: str = "kind", required: bool = True) -> str | None:
    if value == training_pb2.MODEL_KIND_UNSPECIFIED and not required:
        return None
    return check_kind(KINDS.get(value, ""), field)


def _page(page: common_pb2.PageRequest) -> tuple[int, int]:
    size = min(page.page_size or 50, MAX_PAGE)
    try:
        offset = int(page.page_token or 0)
    except ValueError:
        raise InvalidArgument("page.page_token", "not a token returned by this server") from None
    if offset < 0:
        raise InvalidArgument("page.page_token", "not a token returned by this server")
    return offset, size


def _page_info(offset: int, size: int, total: int) -> common_pb2.PageInfo:
    return common_pb2.PageInfo(next_page_token=str(offset + size) if offset + size < total else "", total_size=total)


def _snapshot(s: Snapshot, entries: list[Entry] | None = None) -> training_pb2.Snapshot:
    return training_pb2.Snapshot(
        snapshot_id=s.snapshot_id, project_id=s.project_id, annotation_count=s.annotation_count,
        image_count=s.image_count, train_image_count=s.train_image_count, heldout_image_count=s.heldout_image_count,
        class_names=s.class_names, heldout_percent=s.heldout_percent, create_time=to_timestamp(s.created_at),
        split_key=s.split_key,
        entries=[training_pb2.SnapshotEntry(
            annotation_id=e.annotation_id, label=e.label, heldout=e.heldout, pseudo_label=e.pseudo_label,
            image=common_pb2.ImageRef(image_id=e.image_id, uri=e.uri, width=e.width, height=e.height),
            mask=common_pb2.Mask(size=[e.height, e.width], counts=e.mask_counts)) for e in entries or []])


def _version(mv) -> training_pb2.ModelVersion:
    return training_pb2.ModelVersion(
        project_id=mv.project_id, kind=KIND_ENUMS[mv.kind], version=mv.version, parent_version=mv.parent_version,
        snapshot_id=mv.snapshot_id, state=STATES[mv.state], command=mv.command,
        config_json=json.dumps(mv.config, sort_keys=True),
        figures={k: float(v) for k, v in mv.figures.items() if isinstance(v, (int, float))},
        gate_json=json.dumps(mv.gate, sort_keys=True), triton_model_name=mv.triton_model_name,
        operation_id=mv.operation_id, create_time=to_timestamp(mv.created_at),
        promote_time=to_timestamp(mv.promote_time), update_time=to_timestamp(mv.updated_at),
        class_names=mv.class_names)


class TrainingServicer(training_pb2_grpc.TrainingServicer):
    def __init__(self, kit: Kit) -> None:
        self._kit, settings = kit, kit.settings
        self._annotations = AnnotationStore(kit.sessions)
        self._snapshots = SnapshotStore(kit.sessions, self._annotations)
        self._registry, self._jobs = Registry(kit.sessions), JobStore(kit.sessions)
        self._publisher = publisher_for(settings, lambda task, queue, args: kit.celery.send_task(
            task, queue=queue, args=args))

        def send(op_id: str, project_id: str, kind: str, snapshot_id: str, config: dict) -> None:
            kit.celery.send_task(TRAIN, task_id=op_id, queue=TRAINING_QUEUE, args=[project_id, kind, snapshot_id, config])

        self._starter = Starter(self._annotations, self._snapshots, self._jobs, kit.operations, send,
                                lambda other: kit.celery.AsyncResult(other).state in FINISHED,
                                settings.training_heldout_percent, ReviewStore(kit.sessions),
                                settings.training_split_keys)

    def _known(self, project_id: str) -> None:
        if not project_id:
            raise InvalidArgument("project_id", "required", reason="REQUIRED")
        if self._annotations.count(project_id) == 0 and not self._registry.known_project(project_id):
            raise NotFound(f"the training service has no annotation of project {project_id!r}", field="project_id")

    def CreateSnapshot(self, request, context):
        if not request.project_id:
            raise InvalidArgument("project_id", "required", reason="REQUIRED")
        snapshot, created = self._starter.freeze(request.project_id)
        return training_pb2.CreateSnapshotResponse(snapshot=_snapshot(snapshot), created=created)

    def GetSnapshot(self, request, context):
        self._known(request.project_id)
        snapshot = self._snapshots.get(request.project_id, request.snapshot_id)
        entries = self._snapshots.entries(request.project_id, request.snapshot_id) if request.include_entries else None
        return training_pb2.GetSnapshotResponse(snapshot=_snapshot(snapshot, entries))

    def ListSnapshots(self, request, context):
        self._known(request.project_id)
        offset, size = _page(request.page)
        snapshots, total = self._snapshots.list(request.project_id, offset, size)
        return training_pb2.ListSnapshotsResponse(snapshots=[_snapshot(s) for s in snapshots],
                                                  page=_page_info(offset, size, total))

    def StartTraining(self, request, context):
        self._known(request.project_id)
        kind = _kind(request.kind)
        config = check_config(kind, json_format.MessageToDict(getattr(request, kind),
                                                              preserving_proto_field_name=True))
        record, snapshot = self._starter.start(request.project_id, kind, request.snapshot_id, config)
        stamp = to_timestamp(record.create_time)
        return training_pb2.StartTrainingResponse(snapshot_id=snapshot.snapshot_id, operation=common_pb2.Operation(
            id=record.id, kind=TRAIN, project_id=request.project_id, state=common_pb2.Operation.PENDING,
            message="enqueued", create_time=stamp, update_time=stamp))

    def ListModelVersions(self, request, context):
        self._known(request.project_id)
        kind = _kind(request.kind, required=False)
        offset, size = _page(request.page)
        versions, total = self._registry.list(request.project_id, kind, offset, size)
        current = {}
        for name in ([kind] if kind else KIND_ENUMS):
            found = self._registry.current(request.project_id, name)
            if found is not None:
                current[name.upper()] = found.version
        return training_pb2.ListModelVersionsResponse(versions=[_version(v) for v in versions],
                                                      page=_page_info(offset, size, total), current=current)

    def GetModelVersion(self, request, context):
        self._known(request.project_id)
        kind = _kind(request.kind)
        current = self._registry.current(request.project_id, kind)
        if request.version == 0:
            if current is None:
                raise NotFound(f"project {request.project_id!r} has no current {kind} model: it is on the base "
                               "model", field="version")
            mv = current
        else:
            mv = self._registry.get(request.project_id, kind, request.version)
        return training_pb2.GetModelVersionResponse(version=_version(mv),
                                                    current=current is not None and current.version == mv.version)

    def PromoteModelVersion(self, request, context):
        self._known(request.project_id)
        kind = _kind(request.kind)
        if request.version == 0:
            raise InvalidArgument("version", "required", reason="REQUIRED")
        mv = self._registry.get(request.project_id, kind, request.version)
        return training_pb2.PromoteModelVersionResponse(version=_version(
            promote(self._registry, self._publisher, mv, request.force, request.reason)))

    def RollbackModelVersion(self, request, context):
        self._known(request.project_id)
        kind = _kind(request.kind)
        rolled, current = rollback(self._registry, self._publisher, request.project_id, kind, request.reason)
        return training_pb2.RollbackModelVersionResponse(rolled_back=_version(rolled),
                                                         current=_version(current) if current else None)


def register(server: grpc.Server, kit: Kit) -> None:
    training_pb2_grpc.add_TrainingServicer_to_server(TrainingServicer(kit), server)


if __name__ == "__main__":
    serve("training", register)
