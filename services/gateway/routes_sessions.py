"""REST routes of the annotation loop: the next question, then an interactive segmentation session
(start, click, undo, redo, finish) served by the segmentation service over gRPC.

The next question comes from the dialog service's policy; while that is unavailable (not landed,
down, or without candidates) the fallback asks to segment the next unannotated image, and the
``reason`` says why.
"""

from __future__ import annotations

import io
import logging
import uuid
from datetime import UTC, datetime
from typing import Annotated, Literal

import numpy as np
from fastapi import APIRouter, Body, Request
from PIL import Image as PILImage
from pydantic import BaseModel, ConfigDict, Field

from annotation.v1 import common_pb2, dialog_pb2, segmentation_pb2
from services.common.errors import DomainError, InvalidArgument, PermissionDenied
from services.common.masks import decode_rle
from services.gateway.auth import Annotator, Caller
from services.gateway.pictures import picture
from services.gateway.routes_projects import POOL, task_out
from services.gateway.tables import Annotation, Project
from services.gateway.text import LabelChoice
from services.gateway.videos import parse_frame_image_id
from services.gateway.work import OPEN, RELEASED, SKIPPED, Question, question_detail

log = logging.getLogger(__name__)
router = APIRouter(prefix="/v1/projects/{project_id}")
QUESTION_TYPES = {v: k.removeprefix("QUESTION_TYPE_") for k, v in dialog_pb2.QuestionType.items()}


class NextIn(BaseModel):
    model_config = ConfigDict(strict=True)
    skip: bool = Field(False, description="Skip the question this key holds first: its lease is released and "
                       "it is not asked of this key again.")


class MaskIn(BaseModel):
    size: list[int] = Field(min_length=2, max_length=2, description="[height, width] of the image.")
    counts: str = Field(min_length=1, max_length=2_000_000, description="COCO compressed RLE.")


class StartIn(BaseModel):
    task_id: str = Field("", description="The task (from next question) the session serves.")
    image_id: str = Field("", description="Or an image directly (external tools); a task is issued.")
    label: LabelChoice = Field("", description="One of the project's labels; empty: decided at finish.")
    initial_mask: MaskIn | None = Field(None, description="The mask the first click refines (e.g. a stored mask "
                                        "under review); default: the task's proposal mask, if it has one.")


class ClickIn(BaseModel):
    model_config = ConfigDict(strict=True)  # a JSON true or "3" is no coordinate: 422, not 1 or 3
    x: float = Field(allow_inf_nan=False, description="Column in image pixels, in [0, width).")
    y: float = Field(allow_inf_nan=False, description="Row in image pixels, in [0, height).")
    positive: bool = True
    t_ms: int = Field(0, ge=0, le=2**32 - 1, description="Milliseconds since the session started.")


class BoxIn(BaseModel):
    model_config = ConfigDict(strict=True)
    x: float = Field(allow_inf_nan=False, description="Left edge in image pixels, >= 0.")
    y: float = Field(allow_inf_nan=False, description="Top edge in image pixels, >= 0.")
    width: float = Field(allow_inf_nan=False, description="Width in pixels, >= 1; x + width <= image width.")
    height: float = Field(allow_inf_nan=False, description="Height in pixels, >= 1; y + height <= image height.")
    t_ms: int = Field(0, ge=0, le=2**32 - 1, description="Milliseconds since the session started.")


class FinishIn(BaseModel):
    outcome: Literal["submitted", "skipped", "abandoned"] = "submitted"
    label: LabelChoice = Field("", description="One of the project's labels; empty: the session's, else the "
                               "project's first.")


def check_label(project: Project, label: str) -> str:
    if label and label not in project.labels:
        raise InvalidArgument("label", f"{label[:100]!r} is not a label of project {project.project_id!r}; "
                              f"one of {project.labels[:20]}")
    return label


def mask_out(mask: common_pb2.Mask) -> dict:
    return {"size": list(mask.size), "counts": mask.counts}


def update_out(update: segmentation_pb2.MaskUpdate) -> dict:
    s = update.stats
    return {"mask": mask_out(update.mask), "iou_with_previous": update.iou_with_previous,
            "model_latency_ms": update.model_latency_ms, "service_latency_ms": update.service_latency_ms,
            "click_count": update.click_count, "redo_depth": update.redo_depth,
            "stats": {"area_px": s.area_px, "mean_confidence": s.mean_confidence,
                      "click_confidence": s.click_confidence, "uncertain_fraction": s.uncertain_fraction}}


def click_out(click: common_pb2.Click) -> dict:
    return {"x": click.x, "y": click.y, "positive": click.positive, "t_ms": click.t_ms, "index": click.index}


def box_out(box: common_pb2.Box) -> dict:
    return {"x": box.x, "y": box.y, "width": box.width, "height": box.height}


def session_out(session: segmentation_pb2.SegmentationSession) -> dict:
    return {"session_id": session.session_id, "task_id": session.task_id, "image_id": session.image.image_id,
            "width": session.image.width, "height": session.image.height, "label": session.label,
            "state": segmentation_pb2.SegmentationSessionState.Name(session.state).rsplit("_", 1)[-1].lower(),
            "outcome": common_pb2.SessionOutcome.Name(session.outcome).rsplit("_", 1)[-1].lower(),
            "clicks": [click_out(c) for c in session.clicks], "mask": mask_out(session.mask),
            "redo_depth": session.redo_depth, "box": box_out(session.box) if session.HasField("box") else None}


# Every question type the web annotator shows (VERIFY, LABEL_REGION, SEGMENT, SKIP): each renders as itself.
SHOWN_TYPES = [dialog_pb2.QUESTION_TYPE_VERIFY, dialog_pb2.QUESTION_TYPE_LABEL_REGION,
               dialog_pb2.QUESTION_TYPE_SEGMENT, dialog_pb2.QUESTION_TYPE_SKIP]


REGION_GRANULARITY = {"patch": common_pb2.GRANULARITY_PATCH, "superpixel": common_pb2.GRANULARITY_SUPERPIXEL}


def _dialog_question(request: Request, project_id: str, who: Caller) -> Question | str:
    """The dialog policy's question over the project's selection pool, or why there is none (then the
    fallback asks; a policy with nothing left in the pool does not hide images the pool lacks)."""
    upstream, gateway = request.app.state.upstream, request.app.state.gateway

    def ask(granularity: int) -> dialog_pb2.NextQuestionResponse:
        return upstream.call("dialog", "NextQuestion", dialog_pb2.NextQuestionRequest(
            project_id=project_id, annotator_id=who.annotator_id,
            pool=dialog_pb2.PoolReference(
                pool_id=POOL, strategy=gateway.selection_strategy, granularity=granularity,
                patch_size_px=gateway.question_patch_size_px if granularity == common_pb2.GRANULARITY_PATCH else 0,
                n_superpixels=gateway.question_superpixels if granularity == common_pb2.GRANULARITY_SUPERPIXEL else 0),
            allowed_types=SHOWN_TYPES), who.key, gateway.question_timeout_s)

    region = REGION_GRANULARITY.get(gateway.question_granularity)
    try:
        if region is not None:
            try:
                reply = ask(region)
            except DomainError as exc:
                if exc.code != "FAILED_PRECONDITION":
                    raise
                reply = ask(common_pb2.GRANULARITY_UNSPECIFIED)  # no task model has scored regions yet: whole images
        else:
            reply = ask(common_pb2.GRANULARITY_UNSPECIFIED)
    except DomainError as exc:
        return f"{exc.code}: {exc.message}"
    if reply.exhausted or not reply.HasField("question"):
        return "it has no candidate left in the selection pool"
    q = reply.question
    if q.type not in SHOWN_TYPES:
        return f"it asked a {QUESTION_TYPES[q.type]} question, which this client does not show"
    return question_of(request, project_id, q)


def question_of(request: Request, project_id: str, q: dialog_pb2.Question) -> Question | str:
    """A dialog Question as the gateway issues it: type, prompt and what the page draws (``detail``)."""
    image_id = q.image.image_id or q.region.image_id
    try:
        image = picture(request.app.state, project_id, image_id)
    except DomainError as exc:
        return f"its question names an unknown image or frame ({exc.message})"
    detail = question_detail(q, image.width, image.height,
                             lambda: np.asarray(PILImage.open(io.BytesIO(image.read())).convert("RGB")))
    if image.video_id is not None:
        detail["frame"] = {"video_id": image.video_id, "frame_index": image.frame_index}
    return Question(image_id=image_id, question_type=QUESTION_TYPES[q.type], question_id=q.question_id,
                    policy=q.policy or "dialog", reason=q.reason, prompt=q.prompt or Question.prompt, detail=detail)


@router.post("/questions/next", tags=["loop"])
def next_question(request: Request, project_id: str, who: Annotator,
                  body: Annotated[NextIn | None, Body()] = None) -> dict:
    """The next question for this annotator: the task it holds first (a reload resumes; any other task it
    holds is released), unless ``skip``. ``exhausted`` when none is left for this key; ``held_by_others``
    counts the images that wait in other annotators' leases (``lease_expires_at``: the first ends)."""
    catalog, work = request.app.state.catalog, request.app.state.work
    catalog.project(project_id)
    task = work.hold_one(project_id, who.annotator_id)
    if task is not None and body is not None and body.skip:
        work.close(task, SKIPPED)
        task = None
    if task is None:
        asked = _dialog_question(request, project_id, who)
        if isinstance(asked, Question):
            task = work.issue(project_id, who.annotator_id, asked)  # question_of resolved its image or frame
        if task is None:
            image_id = work.next_image(project_id, who.annotator_id)
            if image_id is not None:
                task = work.issue(project_id, who.annotator_id, Question(
                    image_id=image_id, reason=f"no question from the dialog policy ({asked}); "
                    "segmenting the next unannotated image of the project instead"))
    held, first_expiry = work.held_by_others(project_id, who.annotator_id)
    leases = {"held_by_others": held, "lease_expires_at": first_expiry.isoformat() if first_expiry else None}
    if task is None:
        return {"exhausted": True, "task": None, "image": None, **leases}
    return {"exhausted": False, "task": task_out(task),
            "image": picture(request.app.state, project_id, task.image_id).out, **leases}


@router.post("/sessions", tags=["loop"], status_code=201)
def start_session(request: Request, project_id: str, who: Annotator, body: Annotated[StartIn, Body()]) -> dict:
    catalog, work = request.app.state.catalog, request.app.state.work
    check_label(catalog.project(project_id), body.label)
    issued = False
    if body.task_id:
        task = work.task(project_id, body.task_id)
    elif body.image_id:
        picture(request.app.state, project_id, body.image_id)
        task = work.issue(project_id, who.annotator_id, Question(image_id=body.image_id, policy="client",
                                                                 reason="image chosen by the client"))
        issued = True
    else:
        raise InvalidArgument("task_id", "give task_id (from questions/next) or image_id")
    if who.principal.owner_scope is not None and task.assignee != who.principal.owner_scope:
        raise PermissionDenied(f"task {task.task_id!r} is assigned to another annotator; an annotator works "
                               "only on their own tasks", field="task_id")
    if task.state != OPEN:
        raise InvalidArgument("task_id", f"task {task.task_id!r} is already {task.state.lower()}")
    image = picture(request.app.state, project_id, task.image_id)
    session_id = uuid.uuid4().hex
    initial = body.initial_mask.model_dump() if body.initial_mask else ((task.detail or {}).get("proposal") or {}).get("mask")
    try:
        reply = request.app.state.upstream.call("segmentation", "StartSession", segmentation_pb2.StartSessionRequest(
            project_id=project_id, image=image.image_ref(), image_data=image.read(), session_id=session_id,
            annotator_id=who.annotator_id,
            task_id=task.task_id, question_id=task.question_id or "", label=body.label,
            initial_mask=common_pb2.Mask(size=initial["size"], counts=initial["counts"]) if initial else None),
            who.key)
    except DomainError:
        if issued:  # the task this call issued would hold its image with no session behind it
            work.close(task, RELEASED)
        raise
    work.attach_session(task, session_id)
    return {**session_out(reply.session), "image": image.out}


@router.get("/sessions/{session_id}", tags=["loop"])
def get_session(request: Request, project_id: str, session_id: str, who: Annotator) -> dict:
    reply = request.app.state.upstream.call("segmentation", "GetSession", segmentation_pb2.SegmentationGetSessionRequest(
        project_id=project_id, session_id=session_id), who.key)
    return session_out(reply.session)


@router.post("/sessions/{session_id}/clicks", tags=["loop"])
def add_click(request: Request, project_id: str, session_id: str, who: Annotator,
              body: Annotated[ClickIn, Body()]) -> dict:
    """One click -> the new mask (COCO RLE), its statistics and latencies."""
    reply = request.app.state.upstream.call("segmentation", "AddClick", segmentation_pb2.AddClickRequest(
        project_id=project_id, session_id=session_id,
        click=common_pb2.Click(x=body.x, y=body.y, positive=body.positive, t_ms=body.t_ms)), who.key)
    return {"click": click_out(reply.click), **update_out(reply.update)}


@router.post("/sessions/{session_id}/box", tags=["loop"])
def add_box(request: Request, project_id: str, session_id: str, who: Annotator,
            body: Annotated[BoxIn, Body()]) -> dict:
    """A box around the object as its first input (before any click) -> the mask; Undo and Redo treat it as a
    click (its centre is the session's first click). 422 naming the field for an empty, inverted or
    out-of-image box, or a box after a click."""
    reply = request.app.state.upstream.call("segmentation", "AddBox", segmentation_pb2.AddBoxRequest(
        project_id=project_id, session_id=session_id, t_ms=body.t_ms,
        box=common_pb2.Box(x=body.x, y=body.y, width=body.width, height=body.height)), who.key)
    return {"box": box_out(reply.box), "click": click_out(reply.click), **update_out(reply.update)}


@router.post("/sessions/{session_id}/undo", tags=["loop"])
def undo(request: Request, project_id: str, session_id: str, who: Annotator) -> dict:
    reply = request.app.state.upstream.call("segmentation", "Undo", segmentation_pb2.UndoRequest(
        project_id=project_id, session_id=session_id), who.key)
    return {"click": click_out(reply.undone_click), **update_out(reply.update),
            "box": box_out(reply.undone_box) if reply.HasField("undone_box") else None}


@router.post("/sessions/{session_id}/redo", tags=["loop"])
def redo(request: Request, project_id: str, session_id: str, who: Annotator) -> dict:
    reply = request.app.state.upstream.call("segmentation", "Redo", segmentation_pb2.RedoRequest(
        project_id=project_id, session_id=session_id), who.key)
    return {"click": click_out(reply.redone_click), **update_out(reply.update),
            "box": box_out(reply.redone_box) if reply.HasField("redone_box") else None}


@router.post("/sessions/{session_id}/finish", tags=["loop"])
def finish(request: Request, project_id: str, session_id: str, who: Annotator,
           body: Annotated[FinishIn, Body()]) -> dict:
    """Submit or skip: the final mask is stored here, and the segmentation service sends the session's one
    event (``AnnotationSubmitted``) to every queue that needs it: byproducts, quality, selection, training, and
    the dialog when the task came from its question."""
    outcome = body.outcome.upper()
    check_label(request.app.state.catalog.project(project_id), body.label)
    reply = request.app.state.upstream.call("segmentation", "FinishSession", segmentation_pb2.FinishSessionRequest(
        project_id=project_id, session_id=session_id, label=body.label,
        outcome=common_pb2.SessionOutcome.Value(f"SESSION_OUTCOME_{outcome}")), who.key)
    seconds, stored = record_finished(request, project_id, reply, body.label, who)
    out = {"session": session_out(reply.session), "quality_operation_id": reply.quality_operation_id,
           "byproducts_operation_id": reply.byproducts_operation_id, "seconds": seconds}
    return {**out, "stored": stored} if stored is not None else out


def record_finished(request: Request, project_id: str, reply: segmentation_pb2.FinishSessionResponse, label: str,
                    who: Caller) -> tuple[float, dict | None]:
    """Stores a finished session's result (its seconds are returned): the annotation row (image or frame: what
    export, progress and review read; its task closed) and, for a frame's submitted mask, the frame's human
    sample in the video store (returned), which the next propagation uses. Only the call that recorded the
    session first stores the frame's mask: a repeated finish must not overwrite a later session's."""
    s = reply.session
    seconds = max(0.0, s.update_time.ToNanoseconds() - s.create_time.ToNanoseconds()) / 1e9
    mask = decode_rle(list(s.mask.size), s.mask.counts, tuple(s.mask.size), "mask") if s.mask.counts else None
    outcome = common_pb2.SessionOutcome.Name(s.outcome).removeprefix("SESSION_OUTCOME_")
    row = Annotation(
        session_id=s.session_id, project_id=project_id, image_id=s.image.image_id, task_id=s.task_id,
        annotator_id=s.annotator_id or who.annotator_id, outcome=outcome, label=s.label or label,
        mask_height=s.mask.size[0], mask_width=s.mask.size[1], mask_counts=s.mask.counts,
        area_px=int(mask.sum()) if mask is not None else 0, click_count=len(s.clicks), seconds=seconds,
        quality_operation_id=reply.quality_operation_id, byproducts_operation_id=reply.byproducts_operation_id,
        created_at=datetime.now(UTC))
    if request.app.state.work.record(row) is not row or outcome != "SUBMITTED" or mask is None:
        return seconds, None
    return seconds, store_frame_sample(request, project_id, s.image.image_id, mask, {
        "session_id": s.session_id, "clicks": len(s.clicks), "label": row.label, "annotator_id": row.annotator_id})


def store_frame_sample(request: Request, project_id: str, image_id: str, mask: np.ndarray,
                       sample: dict) -> dict | None:
    """A non-empty mask of a video frame (``image_id`` ``<video>/<index>``) stored as the frame's human sample,
    which the next propagation uses (what the store says of it); None for an image or an empty mask."""
    frame = parse_frame_image_id(image_id)
    if frame is None or not mask.any():
        return None
    return request.app.state.videos.store_mask(project_id, *frame, mask, sample)
