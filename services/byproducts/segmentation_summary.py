"""Byproduct events of a finished segmentation session, from the loop's event (``AnnotationSubmitted``).

The segmentation service sends every finished session, whatever its outcome, to
``byproducts.annotation_submitted`` (``services/common/annotation_events.py``). This turns it into a session
of events under the same session id, with event ids derived from it, so a redelivered message is recognised
as duplicates. A session the web annotator already recorded itself (richer: mouse, keys) wins: its seq 1
exists, and the summary is then refused as a SEQ_CONFLICT by admission and dropped by the worker.
"""

from __future__ import annotations

from annotation.v1 import byproducts_pb2 as pb
from annotation.v1 import common_pb2, dialog_pb2
from services.common.annotation_events import SUBMITTED, outcome


def _unit(value: float) -> float:
    return min(1.0, max(0.0, value))


def events_of(event: common_pb2.AnnotationSubmitted) -> list[pb.Event]:
    """The byproduct events of a decoded ``AnnotationSubmitted``: start, clicks, submit or skip, end."""
    sid, project = event.session_id or event.annotation_id, event.project_id
    width, height = max(1, event.image.width), max(1, event.image.height)
    events: list[pb.Event] = []
    t = 0

    def add(t_ms: int, **payload) -> None:
        nonlocal t
        t = max(t, int(t_ms))  # clicks of unknown time (0) keep the order of seq
        events.append(pb.Event(project_id=project, session_id=sid, event_id=f"{sid}:segmentation:{len(events) + 1}",
                               seq=len(events) + 1, t_ms=t, **payload))

    session = pb.Session(
        session_id=sid, project_id=project, annotator_id=event.annotator_id or "unknown", task_id=event.task_id,
        question_type=dialog_pb2.QUESTION_TYPE_SEGMENT,
        image=common_pb2.ImageRef(image_id=event.image.image_id, uri=event.image.uri, width=width, height=height),
        client=pb.ClientInfo(user_agent="segmentation-service"))
    end_ms = event.total_time_ms
    if event.HasField("submit_time"):
        session.start_time.FromMilliseconds(event.submit_time.ToMilliseconds() - end_ms)
    add(0, session_start=pb.SessionStart(session=session))
    for index, click in enumerate(event.clicks):
        pixel = pb.ClickEvent(x=_unit(click.x / width), y=_unit(click.y / height), positive=click.positive,
                              click_index=index)  # the event lists the clicks in order
        if index < len(event.steps):
            pixel.iou_change = _unit(1.0 - event.steps[index].iou_with_previous)
        add(click.t_ms, click=pixel)
    ended = outcome(event)
    if ended == SUBMITTED:
        add(end_ms, submit=pb.SubmitEvent(mask=event.mask, labels=[event.label] if event.label else [],
                                          click_count=len(event.clicks)))
    elif ended == common_pb2.SESSION_OUTCOME_SKIPPED:
        add(end_ms, skip=pb.SkipEvent())
    add(end_ms, session_end=pb.SessionEnd(outcome=ended))
    return events
