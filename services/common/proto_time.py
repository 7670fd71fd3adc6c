"""Times for proto messages: one conversion for every gRPC adapter."""

from __future__ import annotations

from datetime import datetime

from google.protobuf.timestamp_pb2 import Timestamp


def to_timestamp(value: datetime | float | None) -> Timestamp | None:
    """A datetime, or seconds since the epoch, as a Timestamp; None stays None (field left unset)."""
    if value is None:
        return None
    stamp = Timestamp()
    if isinstance(value, datetime):
        stamp.FromDatetime(value)
    else:
        stamp.FromNanoseconds(int(value * 1e9))
    return stamp
