"""Synthetic annotation sessions (valid event streams) for the tests and the ingest benchmark.

A session is a session_start (seq 1), mostly mouse trajectory events (a few sampled points each,
50 ms apart), a click every ``click_every`` events, now and then an undo, a category change or a
zoom, then submit and session_end. Deterministic for a given seed.
"""

from __future__ import annotations

import random
import uuid

from annotation.v1 import byproducts_pb2 as pb
from annotation.v1 import common_pb2, dialog_pb2

SAMPLE_MS = 50


def session_events(session_id: str, project_id: str, n_events: int, *, seed: int = 0, image_id: str = "img-1",
                   annotator_id: str = "", task_id: str = "task-1", points_per_mouse: int = 5,
                   click_every: int = 25, start_ms: int = 1_760_000_000_000) -> list[pb.Event]:
    """``n_events`` >= 3 valid events of one submitted session, seq 1..n_events. ``annotator_id`` empty:
    the session is the recording key's own (the server names it); another annotator's id may be given
    only by a reviewer's or admin's key."""
    rng = random.Random(seed)
    events: list[pb.Event] = []
    t = 0
    x, y = rng.random(), rng.random()

    def add(**payload) -> pb.Event:
        event = pb.Event(project_id=project_id, event_id=str(uuid.UUID(int=rng.getrandbits(128))),
                         session_id=session_id, seq=len(events) + 1, t_ms=t, **payload)
        event.time.FromMilliseconds(start_ms + t)
        events.append(event)
        return event

    session = pb.Session(session_id=session_id, project_id=project_id, annotator_id=annotator_id, task_id=task_id,
                         image=common_pb2.ImageRef(image_id=image_id, uri=f"file:///images/{image_id}.jpg",
                                                   width=640, height=480),
                         question_type=dialog_pb2.QUESTION_TYPE_SEGMENT,
                         client=pb.ClientInfo(user_agent="synthetic", pointer_type="mouse"))
    session.start_time.FromMilliseconds(start_ms)
    add(session_start=pb.SessionStart(session=session))
    clicks = 0
    while len(events) < n_events - 2:
        n = len(events)
        if n % click_every == 0:
            t += rng.randint(100, 400)
            add(click=pb.ClickEvent(x=x, y=y, positive=clicks == 0 or rng.random() < 0.7, click_index=clicks,
                                    iou_change=rng.random() * 0.5, response_ms=rng.randint(50, 200)))
            clicks += 1
        elif n % 97 == 0:
            t += 300
            add(undo=pb.UndoEvent(click_index=max(0, clicks - 1)))
        elif n % 89 == 0:
            t += 200
            add(category_change=pb.CategoryChange(index=rng.randint(0, 9), name=f"class-{rng.randint(0, 9)}",
                                                  using_keyboard=rng.random() < 0.5))
        elif n % 83 == 0:
            t += 100
            add(zoom_pan=pb.ZoomPanEvent(zoom=2.0, view_x=0.25, view_y=0.25, view_width=0.5, view_height=0.5))
        else:
            points = []
            for _ in range(points_per_mouse):
                t += SAMPLE_MS
                x = min(1.0, max(0.0, x + rng.uniform(-0.02, 0.02)))
                y = min(1.0, max(0.0, y + rng.uniform(-0.02, 0.02)))
                points.append(pb.TrajectoryPoint(x=x, y=y, t_ms=t))
            add(mouse=pb.MouseTrajectory(points=points, sample_interval_ms=SAMPLE_MS))
    t += 500
    add(submit=pb.SubmitEvent(labels=["object"], click_count=clicks))
    add(session_end=pb.SessionEnd(outcome=common_pb2.SESSION_OUTCOME_SUBMITTED))
    return events
