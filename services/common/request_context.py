"""The caller's deadline, set by the gRPC interceptors, readable by plain domain code.

Domain modules read it without importing the transport (a deadline to pass to Redis or Triton).
"""

from __future__ import annotations

import time
from contextvars import ContextVar

_deadline: ContextVar[float | None] = ContextVar("deadline", default=None)


def set_deadline(deadline: float | None) -> None:
    _deadline.set(deadline)


def time_remaining(default: float) -> float:
    """Seconds left before the caller's deadline (monotonic clock), or ``default`` without one."""
    deadline = _deadline.get()
    if deadline is None:
        return default
    return max(0.0, deadline - time.monotonic())
