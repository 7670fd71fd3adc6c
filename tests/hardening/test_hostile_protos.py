"""Hostile protobuf bytes into every request type, and hostile byproduct events into validation.

Request bytes: the server's tolerant deserializer (``ErrorInterceptor``) gives a message or a marker
that ends the call ``INVALID_ARGUMENT`` on field ``request``; never another exception (deep nesting,
unknown groups, wrong wire types, truncated varints). Events: ``check_event`` returns None or an
``InvalidArgument`` whose field is a dotted path under ``events[i]``; it never raises.
"""

from __future__ import annotations

import math

import pytest
from google.protobuf import descriptor_pool, message_factory
from hypothesis import example, given, settings
from hypothesis import strategies as st

from annotation.v1 import byproducts_pb2 as pb
from annotation.v1 import (
    dialog_pb2,
    operations_pb2,
    quality_pb2,
    segmentation_pb2,
    selection_pb2,
    video_pb2,
)
from services.byproducts.validation import KINDS, MAX_ID, check_event, normalise
from services.common.errors import InvalidArgument
from services.common.interceptors import _check_decoded, _tolerant

pytestmark = pytest.mark.unit

SETTINGS = settings(max_examples=200, deadline=None)


def _request_types():
    names = set()
    for module in (pb, dialog_pb2, operations_pb2, quality_pb2, segmentation_pb2, selection_pb2, video_pb2):
        for service in module.DESCRIPTOR.services_by_name.values():
            names.update(method.input_type.full_name for method in service.methods)
    return sorted(names)


REQUEST_TYPES = _request_types()


def _class(name: str):
    return message_factory.GetMessageClass(descriptor_pool.Default().FindMessageTypeByName(name))


def parsed_or_refused(name: str, data: bytes):
    deserialize = _tolerant(_class(name).FromString, name)
    message = deserialize(data)  # must not raise
    try:
        return _check_decoded(message)
    except InvalidArgument as exc:
        assert exc.field == "request" and name in exc.message
        return None


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


@SETTINGS
@given(st.sampled_from(REQUEST_TYPES), st.binary(max_size=512))
@example(REQUEST_TYPES[0], b"\xff" * 11)  # a varint longer than 10 bytes
@example(REQUEST_TYPES[0], b"\x0a\xff\xff\xff\xff\x0f")  # a length far past the end
@example(REQUEST_TYPES[0], b"\x0b" * 20000 + b"\x0c" * 20000)  # 20000 nested unknown groups
@example(REQUEST_TYPES[0], b"\x0c")  # an end-group with no start
def test_arbitrary_bytes_into_every_request_type(name, data):
    parsed_or_refused(name, data)


@pytest.mark.parametrize("name", REQUEST_TYPES)
def test_deeply_nested_messages_are_refused_or_parsed(name):
    """Every length-delimited field nested inside itself 10000 deep (beyond protobuf's recursion
    limit) and unknown groups nested 100000 deep."""
    descriptor = _class(name).DESCRIPTOR
    nested = [f for f in descriptor.fields if f.message_type is not None] or list(descriptor.fields)[:1]
    for field in nested:
        tag = _varint(field.number << 3 | 2)
        data = b""
        for _ in range(10000):
            data = tag + _varint(len(data)) + data
            if len(data) > 1 << 20:
                break
        parsed_or_refused(name, data)
    parsed_or_refused(name, b"\x0b" * 100000)


# --- byproduct events --------------------------------------------------------------------------

ids = st.one_of(st.just(""), st.text(min_size=1, max_size=8), st.text(min_size=MAX_ID, max_size=MAX_ID + 3),
                st.sampled_from(["a\x00b", "\x00"]))
floats = st.one_of(st.floats(allow_nan=True, allow_infinity=True, width=32), st.sampled_from([0.0, 1.0, -0.0]))
uint32 = st.integers(0, 2**32 - 1)
point = st.fixed_dictionaries({"x": floats, "y": floats, "t_ms": uint32})
payloads = st.one_of(
    st.fixed_dictionaries({"mouse": st.fixed_dictionaries({"points": st.lists(point, max_size=5)})}),
    st.fixed_dictionaries({"click": st.fixed_dictionaries(
        {"x": floats, "y": floats, "positive": st.booleans()}, optional={"iou_change": floats})}),
    st.fixed_dictionaries({"correction": st.fixed_dictionaries({"x": floats, "y": floats})}),
    st.fixed_dictionaries({"zoom_pan": st.fixed_dictionaries({
        "zoom": floats, "view_x": floats, "view_y": floats, "view_width": floats, "view_height": floats})}),
    st.fixed_dictionaries({"session_start": st.fixed_dictionaries({"session": st.fixed_dictionaries(
        {"session_id": ids, "project_id": ids, "annotator_id": ids, "task_id": ids,
         "image": st.fixed_dictionaries({"image_id": ids})})})}),
    st.sampled_from([{}, {"undo": {}}, {"redo": {}}]),
)


def _event(project_id, event_id, session_id, seq, t_ms, payload) -> pb.Event:
    event = pb.Event(project_id=project_id, event_id=event_id, session_id=session_id, seq=seq, t_ms=t_ms)
    for kind, value in payload.items():
        sub = getattr(event, kind)
        sub.SetInParent()
        _fill(sub, value)
    return event


def _fill(message, values: dict) -> None:
    for key, value in values.items():
        if isinstance(value, dict):
            getattr(message, key).SetInParent()
            _fill(getattr(message, key), value)
        elif isinstance(value, list):
            for item in value:
                _fill(getattr(message, key).add(), item)
        else:
            setattr(message, key, value)


events = st.builds(_event, ids, ids, ids, st.integers(0, 2**63 - 1) | st.sampled_from([1, 2, 2**53, 2**53 + 1]),
                   uint32, payloads)


def _checked(event: pb.Event, index: int):
    at = f"events[{index}]"
    problem = check_event(event, at)
    if problem is not None:
        assert isinstance(problem, InvalidArgument)
        assert problem.field.startswith(at + ".") and problem.message and problem.reason
    return problem


@settings(max_examples=500, deadline=None)
@given(events, st.integers(0, 4999))
def test_every_event_is_accepted_or_refused_naming_the_field(event, index):
    problem = _checked(event, index)
    if problem is None:  # what passes is what the docs promise, and what PostgreSQL columns can hold
        assert 1 <= event.seq <= 2**53 and event.project_id and event.event_id and event.session_id
        session = event.session_start.session
        for value in (event.project_id, event.event_id, event.session_id, session.annotator_id, session.task_id,
                      session.image.image_id):
            assert len(value) <= MAX_ID and "\x00" not in value, value
        kind = event.WhichOneof("payload")
        assert kind in KINDS and (kind == "session_start") == (event.seq == 1)
        for name in ("x", "y"):
            if kind in ("click", "correction"):
                assert 0 <= getattr(getattr(event, kind), name) <= 1 and not math.isnan(getattr(getattr(event, kind), name))
        normalise(event)


@SETTINGS
@given(st.binary(max_size=2048))
def test_arbitrary_event_batch_bytes(data):
    batch = parsed_or_refused("annotation.v1.EventBatch", data)
    if batch is not None:
        for index, event in enumerate(batch.events):
            _checked(event, index)
