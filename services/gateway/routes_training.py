"""REST routes of the loop's learning half (the training service, docs/training.md): freeze a snapshot, start
a training job of a project on demand, list its model versions. Admins only: a job costs minutes of CPU or GPU.
"""

from __future__ import annotations

import json
from typing import Annotated, Literal

from fastapi import APIRouter, Body, Query, Request
from google.protobuf import json_format
from pydantic import BaseModel, Field

from annotation.v1 import common_pb2, training_pb2
from services.common.errors import InvalidArgument, NotFound, Unavailable
from services.gateway.auth import Admin

router = APIRouter(prefix="/v1/projects/{project_id}/training")

KINDS = {"interactive": training_pb2.MODEL_KIND_INTERACTIVE, "task": training_pb2.MODEL_KIND_TASK,
         "quality": training_pb2.MODEL_KIND_QUALITY}
CONFIGS = {"interactive": training_pb2.InteractiveModelConfig, "task": training_pb2.TaskModelConfig,
           "quality": training_pb2.QualityModelConfig}


class TrainingIn(BaseModel):
    kind: Literal["interactive", "task", "quality"]
    snapshot_id: str = Field("", max_length=64, description="Train on this snapshot; empty: the project's "
                             "accepted annotations now.")
    config: dict = Field(default_factory=dict, description="The kind's configuration (fields of "
                         "InteractiveModelConfig, TaskModelConfig or QualityModelConfig); missing: the defaults.")


def _call(request: Request, method: str, message, key: str):
    try:
        return request.app.state.upstream.call("training", method, message, key)
    except Unavailable as exc:
        raise Unavailable(f"the training service is unavailable: {exc.message}") from None


@router.post("", tags=["training"])
def start_training(request: Request, project_id: str, who: Admin, body: Annotated[TrainingIn, Body()]) -> dict:
    """Starts a training job (follow it with the operation id): 404 for a project without annotations,
    422 naming the field for a bad configuration, 409 for an empty snapshot or while a job of the same
    project and kind runs, 503 while the training service is down."""
    request.app.state.catalog.project(project_id)
    config = CONFIGS[body.kind]()
    try:
        json_format.ParseDict(body.config, config)
    except json_format.ParseError as exc:
        raise InvalidArgument("config", str(exc)) from None
    reply = _call(request, "StartTraining", training_pb2.StartTrainingRequest(
        project_id=project_id, kind=KINDS[body.kind], snapshot_id=body.snapshot_id,
        **{body.kind: config}), who.key)
    return {"operation_id": reply.operation.id, "kind": body.kind, "snapshot_id": reply.snapshot_id,
            "state": common_pb2.Operation.State.Name(reply.operation.state).lower()}


@router.post("/snapshots", tags=["training"])
def create_snapshot(request: Request, project_id: str, who: Admin) -> dict:
    """Freezes the project's accepted annotations as the training service has them (the same annotations give
    the same snapshot): how many images are in the training and held-out splits, so a client knows whether a
    job can start (it needs both). 404 while the training service has no annotation of the project."""
    request.app.state.catalog.project(project_id)
    s = _call(request, "CreateSnapshot", training_pb2.CreateSnapshotRequest(project_id=project_id), who.key).snapshot
    return {"snapshot_id": s.snapshot_id, "annotation_count": s.annotation_count, "image_count": s.image_count,
            "train_image_count": s.train_image_count, "heldout_image_count": s.heldout_image_count,
            "heldout_percent": s.heldout_percent, "split_key": s.split_key, "class_names": list(s.class_names)}


def _version_out(v: training_pb2.ModelVersion) -> dict:
    return {"kind": training_pb2.ModelKind.Name(v.kind).removeprefix("MODEL_KIND_").lower(), "version": v.version,
            "state": training_pb2.ModelState.Name(v.state).removeprefix("MODEL_STATE_").lower(),
            "parent_version": v.parent_version, "snapshot_id": v.snapshot_id, "figures": dict(v.figures),
            "gate": json.loads(v.gate_json or "{}"), "triton_model_name": v.triton_model_name,
            "operation_id": v.operation_id, "create_time": v.create_time.ToJsonString()}


@router.get("/versions", tags=["training"])
def list_versions(request: Request, project_id: str, who: Admin,
                  kind: Annotated[Literal["interactive", "task", "quality", ""], Query()] = "",
                  page_size: Annotated[int, Query(ge=1, le=1000)] = 50, page_token: str = "") -> dict:
    """The project's model versions newest first, with their figures and gate, and the current version of
    each kind (a kind without one is on the base model)."""
    request.app.state.catalog.project(project_id)
    try:
        reply = _call(request, "ListModelVersions", training_pb2.ListModelVersionsRequest(
            project_id=project_id, kind=KINDS.get(kind, training_pb2.MODEL_KIND_UNSPECIFIED),
            page=common_pb2.PageRequest(page_size=page_size, page_token=page_token)), who.key)
    except NotFound as exc:
        if exc.field != "project_id":
            raise
        return {"versions": [], "current": {}, "next_page_token": "", "total": 0}  # nothing trained yet
    return {"versions": [_version_out(v) for v in reply.versions],
            "current": {name.lower(): version for name, version in reply.current.items()},
            "next_page_token": reply.page.next_page_token, "total": reply.page.total_size}
