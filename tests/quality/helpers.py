"""Small synthetic sessions for the quality tests: in the quality model's summary shape (``summary.py``) and as
the loop's event (``AnnotationSubmitted``) that FinishSession sends to ``quality.annotation_submitted``."""

from __future__ import annotations

import numpy as np

from annotation.v1 import common_pb2
from services.common import annotation_events
from services.common.masks import encode_rle

H, W = 60, 80


def square_mask(lo: int = 15, hi: int = 45) -> np.ndarray:
    mask = np.zeros((H, W), bool)
    mask[lo:hi, lo + 10:hi + 10] = True
    return mask


def make_summary(session_id: str = "s1", project_id: str = "p1", clicks: int = 3, good: bool = True,
                 annotator: str = "alice", finish_time: float = 1_800_000_000.0) -> dict:
    """``clicks`` clicks inside a square object; a good session ends with the square, a bad one with a
    sliver that contradicts the clicks, and slowly."""
    final = square_mask() if good else square_mask(28, 33)
    size, counts = encode_rle(final)
    points = [(40, 30), (30, 20), (50, 40), (35, 42), (45, 18)]
    out_clicks, steps = [], []
    for i in range(clicks):
        x, y = points[i % len(points)]
        out_clicks.append({"x": float(x), "y": float(y), "positive": True,
                           "t_ms": (i + 1) * (900 if good else 4000), "index": i})
        steps.append({"stats": {"area_px": int(final.sum()) if i else 300, "click_confidence": 0.95 if good else 0.6,
                                "mean_confidence": 0.97 if good else 0.7, "uncertain_fraction": 0.01 if good else 0.2,
                                "mean_foreground_probability": 0.9, "threshold": 0.49},
                      "iou_with_previous": 0.0 if i == 0 else (0.97 if good else 0.5), "model_latency_ms": 5.0})
    return {"session": {"session_id": session_id, "project_id": project_id, "image_id": f"img-{session_id}",
                        "uri": "", "width": W, "height": H, "annotator_id": annotator, "task_id": "t1",
                        "label": "cat", "state": "FINISHED", "outcome": "SUBMITTED",
                        "create_time": finish_time - 10, "update_time": finish_time, "finish_time": finish_time},
            "clicks": out_clicks, "steps": steps, "mask": {"size": size, "counts": counts}}


def make_event(session_id: str = "s1", project_id: str = "p1", clicks: int = 3, good: bool = True,
               annotator: str = "alice", finish_time: float = 1_800_000_000.0) -> common_pb2.AnnotationSubmitted:
    """The session of ``make_summary`` as the AnnotationSubmitted event the segmentation service sends."""
    summary = make_summary(session_id, project_id, clicks, good, annotator, finish_time)
    meta = summary["session"]
    event = common_pb2.AnnotationSubmitted(
        project_id=project_id, annotation_id=session_id, session_id=session_id, task_id=meta["task_id"],
        annotator_id=annotator, image=common_pb2.ImageRef(image_id=meta["image_id"], width=W, height=H),
        label=meta["label"], mask=common_pb2.Mask(**summary["mask"]), model_version="clickseg:1",
        clicks=[common_pb2.Click(**c) for c in summary["clicks"]],
        steps=[common_pb2.AnnotationSubmitted.Step(
            iou_with_previous=s["iou_with_previous"], model_latency_ms=s["model_latency_ms"],
            **{k: v for k, v in s["stats"].items() if k != "threshold"}) for s in summary["steps"]],
        total_time_ms=10_000, outcome=common_pb2.SESSION_OUTCOME_SUBMITTED)
    event.submit_time.FromMilliseconds(int(finish_time * 1000))
    return event


def make_payload(*args, **kwargs) -> dict:
    """``make_event`` encoded as the Celery task's argument."""
    return annotation_events.encode(make_event(*args, **kwargs))
