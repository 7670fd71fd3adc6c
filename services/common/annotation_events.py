"""The loop's event on the wire: ``annotation.v1.AnnotationSubmitted`` as a Celery task argument.

One submitted annotation is one typed message (protos/annotation/v1/common.proto), enqueued once by its
owner to every queue that needs it as the task ``<queue>.annotation_submitted``. Celery carries JSON, so the
argument is the message's proto3 JSON (field names as in the proto); ``decode`` parses it back with the
proto's own schema (an unknown field or a wrong type is refused, not guessed) and checks what every
receiver relies on, raising ``InvalidArgument`` naming the field. Senders and receivers share this one
codec; nobody re-parses the dict by hand.

The sender gives each message a Celery task id derived from the annotation and the queue (``task_id``), so
the operation ids of a retried submission are the ones of the first, and ``receivers`` says who gets which
event (the proto's comment on ``AnnotationSubmitted``).
"""

from __future__ import annotations

import uuid

from google.protobuf import json_format

from annotation.v1 import common_pb2
from services.common.errors import InvalidArgument
from services.common.masks import decode_rle

TASK_SUFFIX = "annotation_submitted"  # the task on each receiving queue: f"{queue}.{TASK_SUFFIX}"
MAX_ID = 128
MAX_LABEL = 200
MAX_CLICKS = 1000
SUBMITTED = common_pb2.SESSION_OUTCOME_SUBMITTED
SKIPPED, ABANDONED = common_pb2.SESSION_OUTCOME_SKIPPED, common_pb2.SESSION_OUTCOME_ABANDONED
ENDED = frozenset({SUBMITTED, SKIPPED, ABANDONED})  # every way a session ends
# Fixed namespace of the derived Celery task ids (any constant UUID would do; this one must never change).
_TASK_IDS = uuid.UUID("5f0c8a52-7a1e-4d7e-9a43-2b8f1d0e6c11")


def task_name(queue: str) -> str:
    return f"{queue}.{TASK_SUFFIX}"


def task_id(event: common_pb2.AnnotationSubmitted, queue: str) -> str:
    """The Celery task id of ``event`` on ``queue``: the same for every send of the same annotation."""
    return str(uuid.uuid5(_TASK_IDS, f"{event.project_id}/{event.annotation_id}/{queue}"))


def outcome(event: common_pb2.AnnotationSubmitted) -> int:
    """The event's SessionOutcome; UNSPECIFIED (events sent before the field) reads as SUBMITTED."""
    return event.outcome or SUBMITTED


def receivers(event: common_pb2.AnnotationSubmitted) -> list[str]:
    """The queues that need ``event``: a submitted annotation goes to byproducts, quality, selection,
    training (only with a label: it trains per class) and dialog (only when it answers a question); a
    skipped or abandoned session only to byproducts, and to dialog when it served a question. An annotation
    made without a session (an accepted proposal) has no byproducts and no clicks for quality to score."""
    session = bool(event.session_id)
    queues = ["byproducts"] if session else []
    if outcome(event) == SUBMITTED:
        queues += (["quality"] if session else []) + ["selection"] + (["training"] if event.label else [])
    if event.question_id:
        queues.append("dialog")
    return queues


def send(celery, event: common_pb2.AnnotationSubmitted, tasks: dict[str, str]) -> dict[str, str]:
    """Enqueue ``event`` once to each of its ``receivers`` under its derived task ids; {queue: task id}.
    ``celery`` is the sender's Celery app (tasks by name: the sender imports no receiver); ``tasks`` the
    sender's own {queue: task name} of every queue it may reach, written out where it sends, so a reader (and
    the architecture test) sees which wings a sender talks to."""
    payload = encode(event)
    out = {}
    for queue in receivers(event):
        if tasks.get(queue) != task_name(queue):
            raise ValueError(f"the sender declares no task {task_name(queue)!r} for receiver {queue!r}")
        out[queue] = celery.send_task(tasks[queue], args=[payload], queue=queue, task_id=task_id(event, queue)).id
    return out


class InvalidEvent(InvalidArgument):
    """A refused event. Its ``args`` are (field, message), so the exception Celery stores with a failed task
    (JSON: type and args) comes back whole, the field named."""

    def __init__(self, field: str, message: str, *, reason: str = "") -> None:
        super().__init__(field, message, reason=reason)
        self.args = (field, message)


def encode(event: common_pb2.AnnotationSubmitted) -> dict:
    """The Celery argument of ``event`` (JSON-serialisable)."""
    return json_format.MessageToDict(event, preserving_proto_field_name=True)


def _text(value: str, field: str, limit: int, required: bool = True) -> None:
    if required and not value:
        raise InvalidArgument(field, "required", reason="REQUIRED")
    if len(value) > limit or "\x00" in value:
        raise InvalidArgument(field, f"at most {limit} characters, no NUL")


def decode(payload: dict, check_mask: bool = True, *, outcomes: frozenset[int] = frozenset({SUBMITTED}),
           label_required: bool = True) -> common_pb2.AnnotationSubmitted:
    """The event of a task argument, checked (``_decode``); a refusal is an ``InvalidEvent`` naming the field."""
    try:
        return _decode(payload, check_mask, outcomes, label_required)
    except InvalidArgument as exc:
        raise InvalidEvent(exc.field, exc.message, reason=exc.reason) from None


def _decode(payload: dict, check_mask: bool, outcomes: frozenset[int],
            label_required: bool) -> common_pb2.AnnotationSubmitted:
    """The event of a task argument, checked: ids present, image size known, mask of the image's size and
    well formed (``check_mask``), clicks inside the image, one step per click when steps are given.

    ``outcomes``: the session outcomes this receiver accepts (default: annotations only; ``ENDED`` for the
    receivers of skipped and abandoned sessions too). ``label_required``: refuse a submitted annotation
    without a label (default, for training); a skipped or abandoned session never needs one."""
    if not isinstance(payload, dict):
        raise InvalidArgument("payload", "an AnnotationSubmitted JSON object is needed")
    event = common_pb2.AnnotationSubmitted()
    try:
        json_format.ParseDict(payload, event)
    except json_format.ParseError as exc:
        raise InvalidArgument("payload", f"not an AnnotationSubmitted message: {exc}") from None
    _text(event.project_id, "project_id", MAX_ID)
    _text(event.annotation_id, "annotation_id", MAX_ID)
    if outcome(event) not in outcomes:
        names = sorted(common_pb2.SessionOutcome.Name(o) for o in outcomes)
        raise InvalidArgument("outcome", f"{common_pb2.SessionOutcome.Name(event.outcome)} is not taken here; "
                              f"one of {names}")
    _text(event.session_id, "session_id", MAX_ID, required=False)
    _text(event.task_id, "task_id", MAX_ID, required=False)
    _text(event.question_id, "question_id", MAX_ID, required=False)
    _text(event.image.image_id, "image.image_id", 255)
    _text(event.label, "label", MAX_LABEL, required=label_required and outcome(event) == SUBMITTED)
    width, height = event.image.width, event.image.height
    if not width or not height:
        raise InvalidArgument("image", "width and height are required (the mask's size)", reason="REQUIRED")
    if not event.HasField("mask"):
        raise InvalidArgument("mask", "required", reason="REQUIRED")
    if check_mask:
        decode_rle(event.mask.size, event.mask.counts, (height, width), "mask")
    elif list(event.mask.size) != [height, width]:
        raise InvalidArgument("mask.size", f"mask size {list(event.mask.size)} differs from the image's "
                              f"{[height, width]}")
    if len(event.clicks) > MAX_CLICKS:
        raise InvalidArgument("clicks", f"at most {MAX_CLICKS} clicks")
    for i, click in enumerate(event.clicks):
        if not (0 <= click.x < width and 0 <= click.y < height):
            raise InvalidArgument(f"clicks[{i}]", f"({click.x}, {click.y}) lies outside the {width}x{height} image")
    if event.steps and len(event.steps) != len(event.clicks):
        raise InvalidArgument("steps", f"{len(event.steps)} steps for {len(event.clicks)} clicks: one per click")
    return event
