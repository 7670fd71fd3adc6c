"""The loop's event codec (``services/common/annotation_events.py``): who receives which event, the derived
Celery task ids, and refusals that name the field (also after Celery's JSON round trip of a failed task)."""

from __future__ import annotations

import numpy as np
import pytest
from celery import Celery
from celery.backends.base import Backend

from annotation.v1 import common_pb2
from services.common import annotation_events as ae
from services.common.errors import InvalidArgument
from services.common.masks import encode_rle

pytestmark = pytest.mark.unit


def event(**fields) -> common_pb2.AnnotationSubmitted:
    mask = np.zeros((30, 40), bool)
    mask[5:20, 10:30] = True
    size, counts = encode_rle(mask)
    message = common_pb2.AnnotationSubmitted(
        project_id="p1", annotation_id="s1", session_id="s1", task_id="t1", question_id="q1", annotator_id="ann",
        image=common_pb2.ImageRef(image_id="im1", uri="file:///im1.png", width=40, height=30), label="cat",
        mask=common_pb2.Mask(size=size, counts=counts), model_version="clickseg:1", total_time_ms=5000,
        clicks=[common_pb2.Click(x=15, y=10, positive=True, t_ms=900, index=0)],
        steps=[common_pb2.AnnotationSubmitted.Step(iou_with_previous=0.0, area_px=300)],
        outcome=common_pb2.SESSION_OUTCOME_SUBMITTED)
    for name, value in fields.items():
        if isinstance(value, list):
            del getattr(message, name)[:]
        else:
            setattr(message, name, value)
    return message


def test_who_receives_which_event():
    assert ae.receivers(event()) == ["byproducts", "quality", "selection", "training", "dialog"]
    assert ae.receivers(event(question_id="")) == ["byproducts", "quality", "selection", "training"]
    assert ae.receivers(event(label="")) == ["byproducts", "quality", "selection", "dialog"]  # training: classes
    assert ae.receivers(event(outcome=common_pb2.SESSION_OUTCOME_UNSPECIFIED, question_id="")) == \
        ["byproducts", "quality", "selection", "training"]  # read as submitted
    for ended in (common_pb2.SESSION_OUTCOME_SKIPPED, common_pb2.SESSION_OUTCOME_ABANDONED):
        assert ae.receivers(event(outcome=ended)) == ["byproducts", "dialog"]
        assert ae.receivers(event(outcome=ended, question_id="")) == ["byproducts"]


def test_task_ids_are_the_same_for_every_send_of_one_annotation_and_differ_per_queue():
    one, again = event(), event(total_time_ms=9999)  # a re-send may differ in details, never in identity
    ids = {queue: ae.task_id(one, queue) for queue in ("byproducts", "quality", "dialog", "selection", "training")}
    assert ids == {queue: ae.task_id(again, queue) for queue in ids} and len(set(ids.values())) == 5
    assert ae.task_id(event(annotation_id="s2"), "quality") != ids["quality"]
    assert ae.task_id(event(project_id="p2"), "quality") != ids["quality"]
    assert ae.task_name("quality") == "quality.annotation_submitted"


def test_decode_round_trips_and_checks_per_receiver():
    message = event()
    assert ae.decode(ae.encode(message)) == message
    skipped = ae.encode(event(outcome=common_pb2.SESSION_OUTCOME_SKIPPED, label=""))
    assert ae.decode(skipped, outcomes=ae.ENDED, label_required=False).outcome == common_pb2.SESSION_OUTCOME_SKIPPED
    assert ae.decode(ae.encode(event(label="")), label_required=False).label == ""


@pytest.mark.parametrize(("change", "field", "options"), [
    ({"outcome": "SESSION_OUTCOME_SKIPPED"}, "outcome", {}),  # an annotation receiver takes no skipped session
    ({"label": ""}, "label", {}),
    ({"question_id": "q" * 129}, "question_id", {"outcomes": ae.ENDED, "label_required": False}),
    ({"steps": [{}, {}]}, "steps", {}),
    ({"clicks": [{"x": 40, "y": 1}], "steps": []}, "clicks[0]", {}),
    ({"mask": {"size": [30, 41], "counts": "0"}}, "mask.size", {}),
    ({"image": {"image_id": "im1", "width": 40}}, "image", {}),
    ({"annotation_id": ""}, "annotation_id", {}),
    ({"no_such_field": 1}, "payload", {}),
])
def test_a_malformed_event_is_refused_naming_the_field(change, field, options):
    with pytest.raises(InvalidArgument) as refused:
        ae.decode({**ae.encode(event()), **change}, **options)
    assert refused.value.field == field and refused.value.code == "INVALID_ARGUMENT"
    # what a Celery client reads back of the failed task: the same refusal, the field named
    backend = Backend(app=Celery(set_as_current=False), serializer="json")
    back = backend.exception_to_python(backend.prepare_exception(refused.value, "json"))
    assert isinstance(back, InvalidArgument) and back.field == field and str(back).startswith(f"{field}: ")


@pytest.mark.unit
def test_an_annotation_without_a_session_goes_to_selection_and_training_only():
    event = common_pb2.AnnotationSubmitted(project_id="p", annotation_id="verify-q1", label="cat",
                                           outcome=common_pb2.SESSION_OUTCOME_SUBMITTED)
    assert ae.receivers(event) == ["selection", "training"]
