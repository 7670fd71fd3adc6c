"""Byproduct events from the summary the segmentation service enqueues when a session finishes.

The segmentation service sends ``byproducts.segmentation_session_finished`` with
``{"session": meta, "clicks": [...], "steps": [...], "mask": {"size", "counts"}}`` (pixel clicks,
IoU with the previous mask per step). This turns it into a session of events under the same session
id, with event ids derived from it, so a redelivered message is recognised as duplicates. A session
the web annotator already recorded itself (richer: mouse, keys) wins: its seq 1 exists, and the
summary is then refused as a SEQ_CONFLICT by admission and dropped by the worker.
"""

from __future__ import annotations

from annotation.v1 import byproducts_pb2 as pb
from annotation.v1 import common_pb2, dialog_pb2

OUTCOMES = {"SUBMITTED": common_pb2.SESSION_OUTCOME_SUBMITTED, "SKIPPED": common_pb2.SESSION_OUTCOME_SKIPPED,
            "ABANDONED": common_pb2.SESSION_OUTCOME_ABANDONED}


def _unit(value: float) -> float:
    return min(1.0, max(0.0, value))


def events_from_summary(summary: dict) -> list[pb.Event]:
    meta = summary["session"]
    sid, project = meta["session_id"], meta["project_id"]
    width, height = max(1, int(meta.get("width") or 1)), max(1, int(meta.get("height") or 1))
    created_ms = int(float(meta.get("create_time", 0)) * 1000)
    events: list[pb.Event] = []
    t = 0

    def add(t_ms: int, **payload) -> None:
        nonlocal t
        t = max(t, int(t_ms))  # clicks of unknown time (0) keep the order of seq
        event = pb.Event(project_id=project, session_id=sid, event_id=f"{sid}:segmentation:{len(events) + 1}",
                         seq=len(events) + 1, t_ms=t, **payload)
        events.append(event)

    session = pb.Session(
        session_id=sid, project_id=project, annotator_id=meta.get("annotator_id") or "unknown",
        task_id=meta.get("task_id", ""), question_type=dialog_pb2.QUESTION_TYPE_SEGMENT,
        image=common_pb2.ImageRef(image_id=meta.get("image_id", ""), uri=meta.get("uri", ""), width=width,
                                  height=height),
        client=pb.ClientInfo(user_agent="segmentation-service"))
    session.start_time.FromMilliseconds(created_ms)
    add(0, session_start=pb.SessionStart(session=session))
    steps = summary.get("steps", [])
    for index, click in enumerate(summary.get("clicks", [])):
        iou = steps[index].get("iou_with_previous") if index < len(steps) else None
        event = pb.ClickEvent(x=_unit(click["x"] / width), y=_unit(click["y"] / height),
                              positive=bool(click["positive"]), click_index=int(click.get("index", index)))
        if iou is not None:
            event.iou_change = _unit(1.0 - float(iou))
        add(click.get("t_ms", 0), click=event)
    outcome = OUTCOMES.get(meta.get("outcome", ""), common_pb2.SESSION_OUTCOME_ABANDONED)
    end_ms = int((float(meta.get("update_time", 0)) - float(meta.get("create_time", 0))) * 1000)
    mask = summary.get("mask") or {}
    if outcome == common_pb2.SESSION_OUTCOME_SUBMITTED:
        add(end_ms, submit=pb.SubmitEvent(
            mask=common_pb2.Mask(size=mask.get("size", []), counts=mask.get("counts", "")),
            labels=[meta["label"]] if meta.get("label") else [], click_count=len(summary.get("clicks", []))))
    elif outcome == common_pb2.SESSION_OUTCOME_SKIPPED:
        add(end_ms, skip=pb.SkipEvent())
    add(end_ms, session_end=pb.SessionEnd(outcome=outcome))
    return events
