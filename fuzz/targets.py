"""One fuzz target per decoder of outside bytes. Each takes the fuzzer's bytes and checks the
documented contract: the decoder returns, or raises ``InvalidArgument`` naming its field. Any other
exception escapes, and the fuzzer reports it as a crash with the input that caused it.

Imported under ``atheris.instrument_imports()`` by ``fuzz/run.py``, so keep imports at the top.
"""

from __future__ import annotations

import io
import json
import shutil
import tempfile
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
from google.protobuf import descriptor_pool, json_format, message_factory
from PIL import Image

from annotation.v1 import (
    byproducts_pb2,
    dialog_pb2,
    operations_pb2,
    quality_pb2,
    segmentation_pb2,
    selection_pb2,
    video_pb2,
)
from services.byproducts.validation import check_event
from services.common.errors import InvalidArgument
from services.common.images import FORMATS, decode_image
from services.common.interceptors import _check_decoded, _tolerant
from services.common.masks import decode_rle
from services.gateway.byproducts_routes import event_batch
from services.gateway.videos import VideoStore

MAX_BYTES, MAX_PIXELS = 1 << 20, 1024 * 1024


def _refused(exc: InvalidArgument, *fields: str) -> None:
    if not exc.field or (fields and not exc.field.startswith(fields)):
        raise AssertionError(f"refusal names field {exc.field!r}, expected one of {fields}") from exc


def image(data: bytes) -> None:
    try:
        array = decode_image(data, MAX_BYTES, MAX_PIXELS, field="image_data")
    except InvalidArgument as exc:
        _refused(exc, "image_data")
        return
    assert array.dtype == np.uint8 and array.ndim == 3 and array.shape[0] * array.shape[1] <= MAX_PIXELS


def rle(data: bytes) -> None:
    """First two bytes: the mask's height and width (1..256); the rest: the counts string."""
    if len(data) < 2:
        return
    shape = (data[0] + 1, data[1] + 1)
    counts = data[2:].decode("latin-1")
    try:
        mask = decode_rle(list(shape), counts, shape, "previous_mask")
    except InvalidArgument as exc:
        _refused(exc, "previous_mask.counts", "previous_mask.size")
        return
    assert mask.shape == shape and mask.dtype == bool


def _request_classes() -> list[type]:
    names = sorted({method.input_type.full_name
                    for module in (byproducts_pb2, dialog_pb2, operations_pb2, quality_pb2, segmentation_pb2,
                                   selection_pb2, video_pb2)
                    for service in module.DESCRIPTOR.services_by_name.values() for method in service.methods})
    pool = descriptor_pool.Default()
    return [message_factory.GetMessageClass(pool.FindMessageTypeByName(name)) for name in names]


REQUESTS = _request_classes()


def proto(data: bytes) -> None:
    """First byte picks the request type of some RPC; the rest is the wire bytes, as the server's
    tolerant deserializer (ErrorInterceptor) sees them."""
    if not data:
        return
    cls = REQUESTS[data[0] % len(REQUESTS)]
    name = cls.DESCRIPTOR.full_name
    message = _tolerant(cls.FromString, name)(data[1:])
    try:
        _check_decoded(message)
    except InvalidArgument as exc:
        _refused(exc, "request")


def events(data: bytes) -> None:
    """An EventBatch on the wire (gRPC RecordBatch), then every event through validation."""
    batch = _tolerant(byproducts_pb2.EventBatch.FromString, "annotation.v1.EventBatch")(data)
    try:
        batch = _check_decoded(batch)
    except InvalidArgument:
        return
    for index, event in enumerate(batch.events):
        problem = check_event(event, f"events[{index}]")
        assert problem is None or problem.field.startswith(f"events[{index}]."), problem


def events_json(data: bytes) -> None:
    """The REST ingest's path: JSON text -> proto3 JSON mapping of EventBatch (the route's own
    ``event_batch``) -> validation."""
    try:
        body = json.loads(data.decode("utf-8", "replace"))
    except (ValueError, RecursionError):
        return  # refused by the web framework before the route (422 / 400, tested in tests/hardening)
    if not isinstance(body, dict) or not isinstance(body.get("events"), list) or \
            not all(isinstance(e, dict) for e in body["events"]):
        return  # refused by the request model
    try:
        batch = event_batch(str(body.get("project_id", "p")), body["events"])
    except InvalidArgument as exc:
        _refused(exc, "events")
        return
    for index, event in enumerate(batch.events):
        check_event(event, f"events[{index}]")


_video_root: list[Path] = []  # made on first use: importing the targets leaves no folder behind


def video(data: bytes) -> None:
    """A video upload (gateway POST .../videos): a zip of frames or a video file, stored whole or refused
    naming ``file`` with nothing left behind."""
    if not _video_root:
        _video_root.append(Path(tempfile.mkdtemp(prefix="annot-fuzz-videos-")))
    store = VideoStore(_video_root[0], 1 << 20, 1 << 18, 64 * 64, 8)
    try:
        meta = store.add("p", io.BytesIO(data), "upload")
    except InvalidArgument as exc:
        _refused(exc, "file")
        assert not any((store.root / ".partial").iterdir()), "a refused upload left files"
        return
    assert 1 <= meta["frames"] <= 8 and meta["width"] * meta["height"] <= 64 * 64
    shutil.rmtree(store.root / "p" / meta["video_id"])


TARGETS: dict[str, Callable[[bytes], None]] = {
    "image": image, "rle": rle, "proto": proto, "events": events, "events_json": events_json, "video": video,
}


def seeds(name: str) -> list[bytes]:
    """A few valid inputs per target, so the fuzzer starts from the formats rather than from nothing."""
    rng = np.random.default_rng(0)
    if name == "image":
        out = []
        for fmt in FORMATS:
            buffer = io.BytesIO()
            Image.fromarray(rng.integers(0, 255, (6, 5, 3), dtype=np.uint8)).save(buffer, format=fmt)
            out.append(buffer.getvalue())
        return out
    if name == "rle":
        from services.common.masks import encode_rle  # noqa: PLC0415
        mask = rng.random((9, 7)) < 0.4
        return [bytes([8, 6]) + encode_rle(mask)[1].encode()]
    if name == "proto":
        out = []
        for index, cls in enumerate(REQUESTS):
            message = cls()
            if "project_id" in cls.DESCRIPTOR.fields_by_name:
                message.project_id = "p1"
            out.append(bytes([index]) + message.SerializeToString())
        return out
    if name == "video":
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w") as archive:
            for index in range(2):
                frame = io.BytesIO()
                Image.fromarray(rng.integers(0, 255, (6, 5, 3), dtype=np.uint8)).save(frame, format="PNG")
                archive.writestr(f"f{index}.png", frame.getvalue())
        return [buffer.getvalue()]
    event = byproducts_pb2.Event(project_id="p", event_id="e", session_id="s", seq=2, t_ms=5)
    event.click.x, event.click.y = 0.5, 0.25
    if name == "events":
        return [byproducts_pb2.EventBatch(project_id="p", events=[event]).SerializeToString()]
    return [json.dumps({"project_id": "p", "events": [json_format.MessageToDict(event)]}).encode()]
