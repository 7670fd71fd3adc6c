"""REST routes of the answers that need no segmentation session: yes/no to a VERIFY question, the labels of
a LABEL_REGION question, a skip. Each goes to the dialog's RecordAnswer with the seconds the person took (its
cost and acceptance models learn from them); a rejected proposal continues with the plan's next step (the
dialog's follow-up, or segmenting from the proposal). Also the annotator's progress line.
"""

from __future__ import annotations

import logging
import math
from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Body, Request
from pydantic import BaseModel, ConfigDict, Field, model_validator

from annotation.v1 import common_pb2, dialog_pb2, segmentation_pb2, training_pb2
from services.common.errors import DomainError, FailedPrecondition, InvalidArgument, PermissionDenied, Unavailable
from services.common.masks import decode_rle
from services.gateway.auth import Annotator
from services.gateway.pictures import picture
from services.gateway.routes_projects import task_out
from services.gateway.routes_sessions import check_label, question_of, store_frame_sample
from services.gateway.tables import Annotation, Task
from services.gateway.text import LabelChoice
from services.gateway.videos import parse_frame_image_id
from services.gateway.work import OPEN, SKIPPED, SUBMITTED, Question

log = logging.getLogger(__name__)
router = APIRouter(prefix="/v1/projects/{project_id}")


class VerifyIn(BaseModel):
    model_config = ConfigDict(strict=True)
    accepted: bool = Field(description="True: the proposal is right (yes); false: it is not (no).")


class RegionLabelIn(BaseModel):
    label: LabelChoice = Field(min_length=1, description="One of the project's labels.")
    box: list[float] | None = Field(None, min_length=4, max_length=4, description="[x, y, width, height] in image "
                                    "pixels, inside the image, if the person drew one.")


class SkipIn(BaseModel):
    reason: str = Field("", max_length=200, description="Why, if given (e.g. 'ambiguous').")


class AnswerIn(BaseModel):
    verify: VerifyIn | None = Field(None, description="For a VERIFY task.")
    labels: list[RegionLabelIn] | None = Field(None, max_length=1000, description="For a LABEL_REGION task; "
                                               "empty: nothing in the region.")
    skip: SkipIn | None = Field(None, description="For any task.")
    seconds: float = Field(gt=0, le=86_400, allow_inf_nan=False, description="Seconds from showing the question "
                           "to the answer, as the page measured them.")

    @model_validator(mode="after")
    def one_answer(self) -> AnswerIn:
        if sum(part is not None for part in (self.verify, self.labels, self.skip)) != 1:
            raise ValueError("give exactly one of verify, labels, skip")
        return self


def _open_task(request: Request, project_id: str, task_id: str, who: Annotator) -> Task:
    task = request.app.state.work.task(project_id, task_id)
    if who.principal.owner_scope is not None and task.assignee != who.principal.owner_scope:
        raise PermissionDenied(f"task {task_id!r} is assigned to another annotator", field="task_id")
    if task.state != OPEN:
        raise FailedPrecondition(f"task {task_id!r} is already {task.state.lower()}", field="task_id")
    return task


def _check_fits(request: Request, project_id: str, task: Task, body: AnswerIn) -> None:
    if body.verify is not None and task.question_type != "VERIFY":
        raise InvalidArgument("verify", f"task {task.task_id!r} asks {task.question_type}, not VERIFY")
    if body.labels is not None:
        if task.question_type != "LABEL_REGION":
            raise InvalidArgument("labels", f"task {task.task_id!r} asks {task.question_type}, not LABEL_REGION")
        project = request.app.state.catalog.project(project_id)
        image = picture(request.app.state, project_id, task.image_id)
        # boxes lie in the question's region (the page refuses drawing outside it), else in the image; a
        # superpixel's box also covers some of its pixels (its bounding box holds other superpixels too)
        region = (task.detail or {}).get("region") or {}
        rx, ry, rw, rh = region.get("box") or [0, 0, image.width, image.height]
        pixels = decode_rle(region["mask"]["size"], region["mask"]["counts"], (image.height, image.width),
                            "region") if region.get("mask") else None
        for index, item in enumerate(body.labels):
            try:
                check_label(project, item.label)
            except InvalidArgument as exc:
                raise InvalidArgument(f"labels[{index}].label", exc.message) from None
            if item.box is not None:
                x, y, w, h = item.box
                if not (w > 0 and h > 0 and x >= rx and y >= ry and x + w <= rx + rw and y + h <= ry + rh):
                    raise InvalidArgument(f"labels[{index}].box", f"[x, y, width, height] must lie inside the "
                                          f"question's region {[rx, ry, rw, rh]} with width, height > 0")
                if pixels is not None and not pixels[int(y):math.ceil(y + h), int(x):math.ceil(x + w)].any():
                    raise InvalidArgument(f"labels[{index}].box", "the box covers no pixel of the question's "
                                          "superpixel (only its bounding box)")


def _record(request: Request, project_id: str, task: Task, body: AnswerIn, who: Annotator) -> dialog_pb2.Question | None:
    """The dialog's RecordAnswer (a task of the dialog's own question); its follow-up question, if any."""
    answer = dialog_pb2.RecordAnswerRequest(project_id=project_id, question_id=task.question_id,
                                            annotator_id=who.annotator_id, seconds_taken=body.seconds)
    if body.verify is not None:
        answer.verify.CopyFrom(dialog_pb2.VerifyAnswer(accepted=body.verify.accepted))
    elif body.labels is not None:
        answer.labels.CopyFrom(dialog_pb2.LabelAnswer(labels=[
            dialog_pb2.RegionLabel(label=item.label, box=common_pb2.Box(x=item.box[0], y=item.box[1], width=item.box[2],
                                                                        height=item.box[3]) if item.box else None)
            for item in body.labels]))
    else:
        answer.skip.CopyFrom(dialog_pb2.SkipAnswer(reason=body.skip.reason))
    try:
        reply = request.app.state.upstream.call("dialog", "RecordAnswer", answer, who.key)
    except Unavailable as exc:  # the task stays open: the person answers again once the dialog is back
        raise Unavailable(f"the answer was not recorded, the dialog service is unavailable ({exc.message}); "
                          "answer again in a moment") from None
    return reply.follow_up if reply.HasField("follow_up") else None


def _accept_proposal(request: Request, project_id: str, task: Task, seconds: float, who: Annotator) -> None:
    """An accepted proposal mask is the image's annotation, as a submitted mask is (export). The dialog,
    told of the acceptance by RecordAnswer, sends the loop's event (selection, training)."""
    mask = ((task.detail or {}).get("proposal") or {}).get("mask")
    if not mask:
        return
    pixels = decode_rle(mask["size"], mask["counts"], tuple(mask["size"]), "proposal")
    area = int(pixels.sum())
    label = (task.detail or {}).get("proposed_label") or request.app.state.catalog.project(project_id).labels[0]
    row = Annotation(
        session_id=f"verify-{task.task_id}", project_id=project_id, image_id=task.image_id, task_id=task.task_id,
        annotator_id=who.annotator_id, outcome=SUBMITTED, label=label, mask_height=mask["size"][0],
        mask_width=mask["size"][1], mask_counts=mask["counts"], area_px=area, click_count=0, seconds=seconds,
        quality_operation_id="", byproducts_operation_id="", created_at=datetime.now(UTC))
    if request.app.state.work.record(row) is row:  # a frame's human sample too
        store_frame_sample(request, project_id, task.image_id, pixels, {
            "session_id": row.session_id, "clicks": 0, "label": label, "annotator_id": who.annotator_id})


@router.post("/tasks/{task_id}/answer", tags=["loop"])
def answer_task(request: Request, project_id: str, task_id: str, who: Annotator,
                body: Annotated[AnswerIn, Body()]) -> dict:
    """Answer a task without a segmentation session: ``verify`` (VERIFY), ``labels`` (LABEL_REGION) or ``skip``
    (any), with the measured ``seconds``. A task of a dialog question goes to the dialog's RecordAnswer first (503,
    the task still open, while the dialog is unavailable). A rejected proposal comes back with ``follow_up``: the
    next task (the dialog's follow-up, else segmenting from the proposal), which starts its session from the
    proposal mask. An accepted proposal mask is stored as the image's annotation."""
    work = request.app.state.work
    task = _open_task(request, project_id, task_id, who)
    _check_fits(request, project_id, task, body)
    follow = _record(request, project_id, task, body, who) if task.question_id else None
    if body.verify is not None and body.verify.accepted:
        _accept_proposal(request, project_id, task, body.seconds, who)
    work.close(task, SKIPPED if body.skip is not None else SUBMITTED)
    follow_up = None
    if body.verify is not None and not body.verify.accepted:
        asked = question_of(request, project_id, follow) if follow is not None else None
        if isinstance(asked, Question) and "proposal" not in asked.detail and (task.detail or {}).get("proposal"):
            asked.detail["proposal"] = task.detail["proposal"]  # the correction starts from what was rejected
        if not isinstance(asked, Question):
            asked = Question(image_id=task.image_id, question_type="SEGMENT", policy=task.policy,
                             reason="the proposal was rejected: correct it", detail=task.detail or {},
                             prompt="Correct the proposed outline with clicks until the mask fits; then submit.")
        issued = work.issue(project_id, who.annotator_id, asked)
        follow_up = {"task": task_out(issued), "image": picture(request.app.state, project_id, issued.image_id).out}
    return {"task": task_out(work.task(project_id, task_id)),
            "dialog": "recorded" if task.question_id else "no dialog question", "follow_up": follow_up}


@router.get("/progress", tags=["loop"])
def progress(request: Request, project_id: str, who: Annotator) -> dict:
    """Images done (a submitted mask) and to do, the model the segmentation service serves (``model``: name and
    version; ``model_error`` instead while it is unavailable), and the project's own models the loop has
    promoted (``project_models``: kind -> version and its figures on the project's held-out annotations; empty
    while the project is on the base models; ``project_models_error`` while the training service is down)."""
    catalog = request.app.state.catalog
    catalog.project(project_id)
    _, total = catalog.images(project_id, 0, 0)
    annotated = {a.image_id for a in request.app.state.work.annotations(project_id)}
    frames = {i for i in annotated if parse_frame_image_id(i) is not None}
    done = len(annotated - frames)
    out = {"images": total, "done": done, "to_do": max(0, total - done), "frames_done": len(frames), "model": None,
           "model_error": ""}
    try:
        info = request.app.state.upstream.call("segmentation", "GetModelInfo",
                                               segmentation_pb2.SegmentationGetModelInfoRequest(), who.key,
                                               request.app.state.gateway.fallback_timeout_s)
        # an empty version is Triton's latest: name the newest version it has ready
        ready = sorted(info.triton.ready_versions, key=lambda v: (len(v), v))
        out["model"] = {"name": info.model_name, "version": info.model_version or (ready[-1] if ready else "latest")}
    except DomainError as exc:
        out["model_error"] = f"{exc.code}: {exc.message}"
    out["project_models"], out["project_models_error"] = {}, ""
    try:
        listed = request.app.state.upstream.call("training", "ListModelVersions", training_pb2.ListModelVersionsRequest(
            project_id=project_id), who.key, request.app.state.gateway.fallback_timeout_s)
        for v in listed.versions:
            kind = training_pb2.ModelKind.Name(v.kind).removeprefix("MODEL_KIND_")
            if listed.current.get(kind) == v.version:
                out["project_models"][kind.lower()] = {"version": v.version, "figures": dict(v.figures)}
    except DomainError as exc:
        out["project_models_error"] = f"{exc.code}: {exc.message}"
    return out
