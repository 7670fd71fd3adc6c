"""Plain domain modules of the byproducts service: validation, signals, LUAB heatmaps, export chunks."""

from __future__ import annotations

import numpy as np
import pytest

from annotation.v1 import byproducts_pb2 as pb
from annotation.v1 import common_pb2
from services.byproducts import export, luab, signals
from services.byproducts.persist import build_session
from services.byproducts.synthetic import session_events
from services.byproducts.validation import KINDS, check_event

pytestmark = pytest.mark.unit


def event(seq: int, t_ms: int, **payload) -> pb.Event:
    return pb.Event(project_id="p", event_id=f"e{seq}", session_id="s", seq=seq, t_ms=t_ms, **payload)


def start() -> pb.Event:
    return event(1, 0, session_start=pb.SessionStart(session=pb.Session(annotator_id="a")))


def mouse(seq: int, *points: tuple[float, float, int]) -> pb.Event:
    return event(seq, points[-1][2], mouse=pb.MouseTrajectory(
        points=[pb.TrajectoryPoint(x=x, y=y, t_ms=t) for x, y, t in points]))


def test_kinds_mirror_the_enum():
    assert KINDS["session_start"] == pb.EVENT_KIND_SESSION_START and KINDS["session_end"] == pb.EVENT_KIND_SESSION_END
    assert KINDS["zoom_pan"] == pb.EVENT_KIND_ZOOM_PAN and KINDS["box"] == pb.EVENT_KIND_BOX
    assert len(KINDS) == len(pb.EventKind.values()) - 1  # every payload has its kind (UNSPECIFIED aside)


@pytest.mark.parametrize("mutate, field", [
    (lambda e: setattr(e, "event_id", ""), "events[4].event_id"),
    (lambda e: setattr(e, "session_id", ""), "events[4].session_id"),
    (lambda e: setattr(e, "project_id", ""), "events[4].project_id"),
    (lambda e: setattr(e, "seq", 0), "events[4].seq"),
    (lambda e: setattr(e, "seq", 1), "events[4].seq"),  # only the session_start may be seq 1
    (lambda e: e.ClearField("mouse"), "events[4].payload"),
    (lambda e: setattr(e.mouse.points[1], "x", 1.01), "events[4].mouse.points[1].x"),
    (lambda e: setattr(e.mouse.points[0], "y", float("nan")), "events[4].mouse.points[0].y"),
    (lambda e: setattr(e.mouse.points[1], "t_ms", 0), "events[4].mouse.points[1].t_ms"),
    (lambda e: setattr(e, "t_ms", 5), "events[4].t_ms"),
])
def test_stateless_checks_name_the_field(mutate, field):
    candidate = mouse(3, (0.1, 0.1, 10), (0.2, 0.2, 20))
    assert check_event(candidate, "events[4]") is None
    mutate(candidate)
    assert check_event(candidate, "events[4]").field == field


def test_click_zoom_and_start_checks():
    assert check_event(event(2, 5, click=pb.ClickEvent(x=0.5, y=-0.1)), "e").field == "e.click.y"
    assert check_event(event(2, 5, click=pb.ClickEvent(x=0.5, y=0.5, iou_change=2)), "e").field == "e.click.iou_change"
    assert check_event(event(2, 5, zoom_pan=pb.ZoomPanEvent(zoom=0)), "e").field == "e.zoom_pan.zoom"
    assert check_event(event(2, 5, zoom_pan=pb.ZoomPanEvent(zoom=1, view_width=0, view_height=1)),
                       "e").field == "e.zoom_pan.view_width"
    bare = event(1, 0, session_start=pb.SessionStart())
    assert check_event(bare, "e").field == "e.session_start.session.annotator_id"
    other = event(1, 0, session_start=pb.SessionStart(session=pb.Session(annotator_id="a", session_id="zz")))
    assert check_event(other, "e").field == "e.session_start.session.session_id"
    assert check_event(start(), "e") is None


def box(seq: int = 3, t_ms: int = 1200, **edges) -> pb.Event:
    return event(seq, t_ms, box=pb.BoxEvent(**{"x0": 0.2, "y0": 0.3, "x1": 0.6, "y1": 0.7, "click_index": 0, **edges}))


@pytest.mark.parametrize("edges, field, reason", [
    ({"x0": -0.1}, "e.box.x0", "OUT_OF_RANGE"),
    ({"y0": float("nan")}, "e.box.y0", "OUT_OF_RANGE"),
    ({"x1": 1.2}, "e.box.x1", "OUT_OF_RANGE"),
    ({"y1": float("inf")}, "e.box.y1", "OUT_OF_RANGE"),
    ({"x0": 0.6, "x1": 0.2}, "e.box.x1", "INVERTED"),
    ({"y1": 0.3}, "e.box.y1", "INVERTED"),  # no height
])
def test_box_checks_name_the_edge(edges, field, reason):
    assert check_event(box(), "e") is None
    problem = check_event(box(**edges), "e")
    assert (problem.field, problem.reason) == (field, reason)


def test_a_box_is_an_input_not_a_correction_and_reaches_luab():
    events = [start(), event(2, 1200, click=pb.ClickEvent(x=0.4, y=0.5, positive=True)), box(3, 1200),
              event(4, 3000, submit=pb.SubmitEvent()),
              event(5, 3000, session_end=pb.SessionEnd(outcome=common_pb2.SESSION_OUTCOME_SUBMITTED))]
    result = signals.compute(events, threshold_ms=5000)
    assert result.correction_count == 0 and result.click_count == 1
    record = luab.image_record(common_pb2.ImageRef(image_id="i"), [(pb.Session(session_id="s"), events)],
                               luab.HeatmapSpec(size=8))
    assert record["boxes"] == [[pytest.approx(0.2), pytest.approx(0.3), pytest.approx(0.6), pytest.approx(0.7), 1200]]
    assert KINDS["box"] in luab.USED_KINDS


def test_signals_of_a_hand_made_session():
    events = [
        start(),
        mouse(2, (0.0, 0.0, 100), (0.3, 0.4, 200)),          # 0.5 of path
        event(3, 1000, click=pb.ClickEvent(x=0.3, y=0.4, positive=True)),
        mouse(4, (0.3, 0.4, 9000), (0.3, 0.9, 9100)),         # idle 1000 -> 9000, then 0.5 of path
        event(5, 9500, undo=pb.UndoEvent()),
        event(6, 9600, category_change=pb.CategoryChange(index=1, name="cat", using_keyboard=True)),
        event(7, 9700, category_change=pb.CategoryChange(index=2, name="dog")),
        event(8, 10000, click=pb.ClickEvent(x=0.3, y=0.9, positive=False)),
        event(9, 12000, submit=pb.SubmitEvent()),
        event(10, 12000, session_end=pb.SessionEnd(outcome=common_pb2.SESSION_OUTCOME_SUBMITTED)),
    ]
    result = signals.compute(events, threshold_ms=5000)
    assert result.time_to_first_click_ms == 1000 and result.total_time_ms == 12000
    assert result.idle_gaps == [(1000, 8000)] and result.active_time_ms == 4000
    assert result.click_count == 2 and result.correction_count == 1
    assert result.mouse_path_length == pytest.approx(0.5 + 0.0 + 0.5)  # the jump between events counts too: 0
    assert result.clicks_per_minute == pytest.approx(2 / (4000 / 60000))
    assert result.category_change_count == 2 and result.keyboard_fraction == 0.5
    assert result.outcome == common_pb2.SESSION_OUTCOME_SUBMITTED
    assert signals.compute([start()], 5000).time_to_first_click_ms == -1


def test_session_row_follows_the_lifecycle_events_in_any_arrival_order():
    events = session_events("s", "p", 10, start_ms=1_000_000)
    rows = [(e.SerializeToString(), 5) for e in events if e.WhichOneof("payload") in ("session_start", "submit",
                                                                                           "session_end")]
    session = build_session(rows)
    assert session.outcome == common_pb2.SESSION_OUTCOME_SUBMITTED
    assert session.end_time.ToMilliseconds() == 1_000_000 + events[-1].t_ms
    assert build_session(rows[1:]) is None  # no start yet: no session row


def test_heatmap_peaks_at_the_clicks_and_mouse_weight_spreads_it():
    spec = luab.HeatmapSpec(size=16, sigma=1.0, mouse_weight=0.0)
    grid = luab.heatmap(np.array([[0.25, 0.75]]), np.array([[0.9, 0.1]] * 50), spec)
    assert grid.dtype == np.uint8 and grid.max() == 255
    assert np.unravel_index(grid.argmax(), grid.shape) == (12, 4)  # row = y, column = x
    assert grid[1, 14] == 0  # mouse ignored at weight 0
    weighted = luab.heatmap(np.array([[0.25, 0.75]]), np.array([[0.9, 0.1]] * 50), luab.HeatmapSpec(16, 1.0, 0.5))
    assert weighted[1, 14] == 255  # 50 mouse samples at weight 0.5 outweigh one click
    assert luab.heatmap(np.zeros((0, 2)), np.zeros((0, 2)), spec).max() == 0


def test_export_chunks_end_on_lines_and_respect_the_limit():
    lines = [b"x" * n + b"\n" for n in (10, 20, 30, 200, 5)]
    pieces = list(export.chunks(lines, 64))
    assert b"".join(data for data, _ in pieces) == b"".join(lines)
    assert [count for _, count in pieces] == [3, 1, 1]  # 63 bytes, the long line alone, the rest
    assert all(data.endswith(b"\n") for data, _ in pieces)
