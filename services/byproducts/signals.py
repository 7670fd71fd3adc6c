"""Signals derived from one session's events: timing, idleness, corrections, mouse path, keyboard use.

A pure function of the events (in seq order): the worker stores its result, GetSignals computes it
on the fly for a session whose signals are not stored yet. Times are the client's ``t_ms``; the
activity timeline is every event's ``t_ms`` plus every sampled pointer position's.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from annotation.v1 import byproducts_pb2 as pb
from annotation.v1 import common_pb2

CORRECTIONS = ("undo", "redo", "correction")  # not "box": a box prompt is an input, logged with its click
ENDINGS = ("submit", "skip", "session_end")


@dataclass(frozen=True)
class Signals:
    time_to_first_click_ms: int
    total_time_ms: int
    active_time_ms: int
    idle_gaps: list[tuple[int, int]] = field(default_factory=list)  # (start_ms, duration_ms)
    idle_threshold_ms: int = 5000
    click_count: int = 0
    correction_count: int = 0
    mouse_path_length: float = 0.0
    clicks_per_minute: float = 0.0
    category_change_count: int = 0
    keyboard_fraction: float = 0.0
    outcome: int = common_pb2.SESSION_OUTCOME_UNSPECIFIED


def idle_gaps(times_ms: np.ndarray, threshold_ms: int) -> list[tuple[int, int]]:
    """Pauses longer than ``threshold_ms`` between consecutive activity times."""
    if times_ms.size < 2:
        return []
    times = np.sort(times_ms)
    steps = np.diff(times)
    where = np.flatnonzero(steps > threshold_ms)
    return [(int(times[i]), int(steps[i])) for i in where]


def path_length(xs: np.ndarray, ys: np.ndarray) -> float:
    if xs.size < 2:
        return 0.0
    return float(np.hypot(np.diff(xs), np.diff(ys)).sum())


def compute(events: Sequence[pb.Event], threshold_ms: int) -> Signals:
    """Signals of one session from its events in seq order."""
    times: list[int] = []
    xs: list[float] = []
    ys: list[float] = []
    first_click, clicks, corrections, changes, by_keyboard = -1, 0, 0, 0, 0
    end_ms, last_ms, outcome = None, 0, common_pb2.SESSION_OUTCOME_UNSPECIFIED
    for event in events:
        kind = event.WhichOneof("payload")
        times.append(event.t_ms)
        last_ms = max(last_ms, event.t_ms)
        if kind == "mouse":
            for point in event.mouse.points:
                times.append(point.t_ms)
                xs.append(point.x)
                ys.append(point.y)
        elif kind == "click":
            clicks += 1
            if first_click < 0:
                first_click = event.t_ms
        elif kind in CORRECTIONS:
            corrections += 1
        elif kind == "category_change":
            changes += 1
            by_keyboard += event.category_change.using_keyboard
        if kind in ENDINGS:
            end_ms = event.t_ms
            if kind == "submit":
                outcome = common_pb2.SESSION_OUTCOME_SUBMITTED
            elif kind == "skip":
                outcome = common_pb2.SESSION_OUTCOME_SKIPPED
            elif event.session_end.outcome:
                outcome = event.session_end.outcome
    total = end_ms if end_ms is not None else last_ms
    active_times = np.array([t for t in times if t <= total] or [0], dtype=np.int64)
    gaps = idle_gaps(active_times, threshold_ms)
    active = max(0, total - sum(duration for _, duration in gaps))
    return Signals(
        time_to_first_click_ms=first_click, total_time_ms=total, active_time_ms=active, idle_gaps=gaps,
        idle_threshold_ms=threshold_ms, click_count=clicks, correction_count=corrections,
        mouse_path_length=path_length(np.array(xs), np.array(ys)),
        clicks_per_minute=clicks / (active / 60000) if active > 0 else 0.0,
        category_change_count=changes, keyboard_fraction=by_keyboard / changes if changes else 0.0,
        outcome=outcome)
