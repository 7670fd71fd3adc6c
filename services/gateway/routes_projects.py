"""REST routes: projects, image upload and download, tasks. Thin: wire format <-> Catalog/WorkStore.

Selection is told about projects (a pool ``default``), images (items) as they arrive, best effort:
the gateway works without the selection service, and says so in the response. The pool's classes are
``background`` and the project's labels (``pool_classes``), as the Pool message says binary object
segmentation is; so a one-label project gets a pool too.
"""

from __future__ import annotations

import hashlib
import json
import logging
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Body, File, Query, Request, UploadFile
from fastapi.responses import FileResponse
from pydantic import BaseModel, Field
from sqlalchemy import select

from annotation.v1 import common_pb2, selection_pb2
from services.common.errors import DomainError, PermissionDenied
from services.common.keys import ApiKey, KeyStore, Role
from services.common.masks import decode_rle
from services.gateway.auth import Admin, Annotator, CurrentCaller, require
from services.gateway.coco import coco_import
from services.gateway.tables import Annotation, Image, Project, Task
from services.gateway.text import DisplayName, LabelList

log = logging.getLogger(__name__)
router = APIRouter(prefix="/v1/projects")
POOL = "default"
MAX_OFFSET = 2**31 - 1  # SQL integers: a larger offset is a 422, not a driver overflow


BACKGROUND = "background"


class ProjectIn(BaseModel):
    project_id: str = Field(min_length=1, max_length=64, description="[A-Za-z0-9_.-], unique.")
    name: DisplayName = Field("", description="Shown to annotators; no control characters.")
    labels: LabelList = Field(default_factory=lambda: ["object"], description=(
        "1-1000 distinct labels of at most 100 characters, no control characters. One label is a binary "
        "object segmentation project."))


def pool_classes(labels: list[str]) -> list[str]:
    """The selection pool's class axis for a project's labels: background first, then the labels (a
    project that names background itself keeps its order)."""
    classes = list(labels) if BACKGROUND in labels else [BACKGROUND, *labels]
    return classes if len(classes) >= 2 else [BACKGROUND, "object"]


def project_out(row: Project) -> dict:
    return {"project_id": row.project_id, "name": row.name, "labels": row.labels,
            "created_at": row.created_at.isoformat()}


def image_out(row: Image) -> dict:
    return {"image_id": row.image_id, "filename": row.filename, "width": row.width, "height": row.height,
            "content_type": row.content_type, "size_bytes": row.size_bytes, "position": row.position,
            "url": f"/v1/projects/{row.project_id}/images/{row.image_id}/content"}


def task_out(row: Task) -> dict:
    detail = row.detail or {}
    return {"task_id": row.task_id, "image_id": row.image_id, "question_type": row.question_type,
            "question_id": row.question_id, "policy": row.policy, "reason": row.reason, "prompt": row.prompt,
            "assignee": row.assignee, "state": row.state.lower(), "session_id": row.session_id,
            "created_at": row.created_at.isoformat(), "updated_at": row.updated_at.isoformat(),
            # what the page draws: the region (kind, box, superpixel mask), the proposal (mask or box)
            "region": detail.get("region", {"kind": "whole_image"}), "proposal": detail.get("proposal"),
            "proposed_label": detail.get("proposed_label", ""), "plan": detail.get("plan", [row.question_type]),
            "proposal_source": detail.get("proposal_source", ""),
            "selection_model_version": detail.get("selection_model_version", ""),
            "frame": detail.get("frame")}  # {video_id, frame_index} when the question is about a video frame


def selection_call(request: Request, method: str, message, key: str) -> str:
    """Best-effort call to the selection service; returns 'ok' or why it did not happen."""
    try:
        request.app.state.upstream.call("selection", method, message, key,
                                        request.app.state.gateway.fallback_timeout_s)
        return "ok"
    except DomainError as exc:
        if exc.code == "ALREADY_EXISTS":
            return "ok"
        log.warning("selection %s failed: %s", method, exc)
        return f"{exc.code}: {exc.message}"


@router.post("", tags=["projects"], status_code=201, dependencies=[require(Role.ADMIN)])
def create_project(request: Request, body: ProjectIn, who: CurrentCaller) -> dict:
    who.principal.authorize(Role.ADMIN, body.project_id)
    row = request.app.state.catalog.create_project(body.project_id, body.name, body.labels, who.annotator_id)
    selection = selection_call(request, "CreatePool", selection_pb2.CreatePoolRequest(
        project_id=row.project_id, pool_id=POOL, display_name=row.name, class_names=pool_classes(row.labels)),
        who.key)
    return {**project_out(row), "selection": selection}


@router.delete("/{project_id}", tags=["projects"])
def delete_project(request: Request, project_id: str, who: Admin) -> dict:
    """Deletes the project with its images (files too), tasks, annotations and videos; the project leaves
    every key's scope, and keys scoped to it alone are revoked (a project later made with the same id does
    not fall to old keys). What other services keep about it (byproducts, quality scores, dialog answers,
    the selection pool) stays until they have delete calls of their own."""
    removed = request.app.state.catalog.delete_project(project_id)
    videos = request.app.state.videos
    doomed = videos.videos(project_id)
    for video in doomed:
        videos.delete(project_id, video["video_id"])
    revoked, rescoped = _unscope_keys(request, project_id)
    return {"project_id": project_id, **removed, "videos": len(doomed), "keys_revoked": revoked,
            "keys_rescoped": rescoped}


def _unscope_keys(request: Request, project_id: str) -> tuple[int, int]:
    """Takes a deleted project out of every key's scope; revokes (and logs out) keys left with none."""
    keys: KeyStore = request.app.state.keys
    revoked, rescoped = [], 0
    with request.app.state.catalog.sessions.begin() as session:
        for row in session.scalars(select(ApiKey).where(ApiKey.revoked_at.is_(None))).all():
            if project_id not in row.projects:
                continue
            remaining = [p for p in row.projects if p != project_id]
            if remaining:
                row.projects, rescoped = remaining, rescoped + 1
            else:
                revoked.append(row.id)
    for key_id in revoked:
        keys.revoke(key_id)
        request.app.state.web_sessions.close_for_key(key_id)
    return len(revoked), rescoped


@router.get("", tags=["projects"])
def list_projects(request: Request, who: CurrentCaller) -> list[dict]:
    """The projects this key may see: annotators and reviewers only those they are scoped to."""
    return [project_out(p) for p in request.app.state.catalog.projects(who.principal)]


@router.get("/{project_id}", tags=["projects"])
def get_project(request: Request, project_id: str, who: Annotator) -> dict:
    catalog = request.app.state.catalog
    _, total = catalog.images(project_id, 0, 0)
    work = request.app.state.work
    return {**project_out(catalog.project(project_id)), "images": total,
            "annotations": len(work.annotations(project_id))}


@router.post("/{project_id}/images", tags=["images"], status_code=201)
def upload_images(request: Request, project_id: str, who: Admin,
                  files: Annotated[list[UploadFile], File(description="One or more image files.")]) -> dict:
    """Multipart upload of JPEG, PNG, WebP, BMP or TIFF images, within the byte and pixel limits
    (the pixel count is read from the header before decoding). Re-uploading the same bytes returns
    the stored image (``duplicate``: true)."""
    catalog = request.app.state.catalog
    uploaded, items = [], []
    for index, upload in enumerate(files):
        try:
            result = catalog.add_image(project_id, upload.file.read(), upload.filename or "")
        except DomainError as exc:
            if exc.field == "file":
                exc.field = f"files[{index}]"
            raise
        uploaded.append({**image_out(result.image), "duplicate": result.duplicate})
        row = result.image
        items.append(selection_pb2.PoolItem(item_id=row.image_id, kind=selection_pb2.ITEM_KIND_IMAGE,
                                            image=common_pb2.ImageRef(
                                                image_id=row.image_id, width=row.width, height=row.height,
                                                uri=(catalog.image_dir / row.stored_name).resolve().as_uri())))
    selection = selection_call(request, "RegisterItems", selection_pb2.RegisterItemsRequest(
        project_id=project_id, pool_id=POOL, items=items), who.key)
    return {"images": uploaded, "selection": selection}


@router.get("/{project_id}/images", tags=["images"])
def list_images(request: Request, project_id: str, who: Annotator,
                offset: Annotated[int, Query(ge=0, le=MAX_OFFSET)] = 0, limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> dict:
    request.app.state.catalog.project(project_id)
    rows, total = request.app.state.catalog.images(project_id, offset, limit)
    return {"images": [image_out(r) for r in rows], "total": total}


@router.get("/{project_id}/images/{image_id}", tags=["images"])
def get_image(request: Request, project_id: str, image_id: str, who: Annotator) -> dict:
    return image_out(request.app.state.catalog.image(project_id, image_id))


@router.get("/{project_id}/images/{image_id}/content", tags=["images"], response_class=FileResponse)
def image_content(request: Request, project_id: str, image_id: str, who: Annotator) -> FileResponse:
    catalog = request.app.state.catalog
    row = catalog.image(project_id, image_id)
    return FileResponse(catalog.image_dir / row.stored_name, media_type=row.content_type,
                        headers={"Cache-Control": "private, max-age=3600"})


@router.get("/{project_id}/tasks", tags=["tasks"])
def list_tasks(request: Request, project_id: str, who: Annotator,
               state: Annotated[str, Query(pattern="^(|open|submitted|skipped|released)$")] = "",
               offset: Annotated[int, Query(ge=0, le=MAX_OFFSET)] = 0, limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> dict:
    tasks = request.app.state.work.tasks(project_id, state, offset, limit)
    if who.principal.role < Role.REVIEWER:  # annotators see their own tasks
        tasks = [t for t in tasks if t.assignee == who.annotator_id]
    return {"tasks": [task_out(t) for t in tasks]}


@router.get("/{project_id}/tasks/{task_id}", tags=["tasks"])
def get_task(request: Request, project_id: str, task_id: str, who: Annotator) -> dict:
    task = request.app.state.work.task(project_id, task_id)
    if who.principal.owner_scope is not None and task.assignee != who.principal.owner_scope:
        raise PermissionDenied(f"task {task_id!r} is assigned to another annotator", field="task_id")
    return task_out(task)


class CocoIn(BaseModel):
    images: list[dict[str, Any]] = Field(max_length=100_000, description="COCO images; matched to the project's "
                                         "images by file_name (or platform_image_id, as this gateway exports).")
    annotations: list[dict[str, Any]] = Field(max_length=1_000_000, description="COCO annotations: segmentation "
                                              "as RLE (compressed or not) or polygons, else bbox.")
    categories: list[dict[str, Any]] = Field(max_length=1000, description="COCO categories; names must be labels "
                                             "of the project.")


@router.post("/{project_id}/imports/coco", tags=["images"])
def import_coco(request: Request, project_id: str, who: Admin, body: Annotated[CocoIn, Body()]) -> dict:
    """Existing annotations into the project: each mask of a COCO JSON whose image is uploaded here becomes a
    submitted annotation (exports, review, selection's labelled count). Idempotent: the same mask imported again
    is the same annotation. ``kinds``: the imported annotations by the shape the file gave (rle, polygon, box);
    ``skipped_empty``: annotations of matched images that covered no pixel; ``unmatched_images``: the COCO file
    names no project image has."""
    catalog, work = request.app.state.catalog, request.app.state.work
    project = catalog.project(project_id)
    images, _ = catalog.images(project_id, 0, 1_000_000)
    masks, unmatched, empty = coco_import(body.model_dump(), images, project.labels)
    now = datetime.now(UTC)
    labelled = []
    for mask in masks:
        # the annotation's identity is its mask and label, whatever shape the file gave it in
        digest = hashlib.sha256(json.dumps({k: v for k, v in mask.items() if k != "kind"}, sort_keys=True)
                                .encode()).hexdigest()[:32]
        area = int(decode_rle(mask["size"], mask["counts"], tuple(mask["size"]), "mask").sum())
        work.record(Annotation(
            session_id=f"import-{digest}", project_id=project_id, image_id=mask["image_id"], task_id="",
            annotator_id=who.annotator_id, outcome="SUBMITTED", label=mask["label"], mask_height=mask["size"][0],
            mask_width=mask["size"][1], mask_counts=mask["counts"], area_px=area, click_count=0, seconds=0.0,
            quality_operation_id="", byproducts_operation_id="", created_at=now))
        labelled.append(selection_pb2.LabelledItem(item_id=mask["image_id"], annotator_id=who.annotator_id,
                                                   mask=common_pb2.Mask(size=mask["size"], counts=mask["counts"])))
    selection = selection_call(request, "ReportLabels", selection_pb2.ReportLabelsRequest(
        project_id=project_id, pool_id=POOL, labels=labelled), who.key) if labelled else "nothing to report"
    kinds = {kind: sum(m["kind"] == kind for m in masks) for kind in ("rle", "polygon", "box")}
    return {"imported": len(masks), "images": len({m["image_id"] for m in masks}), "kinds": kinds,
            "skipped_empty": empty, "unmatched_images": unmatched, "selection": selection}
