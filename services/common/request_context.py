"""Per-request facts set by the transport adapters, readable by plain domain code.

The gRPC interceptors and the gateway set these; domain modules read them without importing
either transport (a deadline to pass to Redis or Triton, the caller for audit fields).
"""

from __future__ import annotations

import time
from contextvars import ContextVar

from services.common.keys import Principal

_principal: ContextVar[Principal | None] = ContextVar("principal", default=None)
_deadline: ContextVar[float | None] = ContextVar("deadline", default=None)


def set_request(principal: Principal | None, deadline: float | None) -> None:
    _principal.set(principal)
    _deadline.set(deadline)


def current_principal() -> Principal | None:
    return _principal.get()


def time_remaining(default: float) -> float:
    """Seconds left before the caller's deadline (monotonic clock), or ``default`` without one."""
    deadline = _deadline.get()
    if deadline is None:
        return default
    return max(0.0, deadline - time.monotonic())
