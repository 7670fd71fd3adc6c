"""The caller's deadline and verified key, set by the gRPC interceptors, readable by plain domain code.

Domain modules read them without importing the transport (a deadline to pass to Redis or Triton; whose
sessions the caller may touch).
"""

from __future__ import annotations

import time
from contextvars import ContextVar
from typing import TYPE_CHECKING

from services.common.errors import Unauthenticated

if TYPE_CHECKING:
    from services.common.keys import Principal

_deadline: ContextVar[float | None] = ContextVar("deadline", default=None)
_principal: ContextVar[Principal | None] = ContextVar("principal", default=None)


def set_deadline(deadline: float | None) -> None:
    _deadline.set(deadline)


def time_remaining(default: float) -> float:
    """Seconds left before the caller's deadline (monotonic clock), or ``default`` without one."""
    deadline = _deadline.get()
    if deadline is None:
        return default
    return max(0.0, deadline - time.monotonic())


def set_principal(principal: Principal | None) -> None:
    """Set by the auth interceptor on every call (None for the public health and reflection services)."""
    _principal.set(principal)


def caller() -> Principal:
    """The verified key of the call being served; a servicer of an RPC with an access rule always has one."""
    principal = _principal.get()
    if principal is None:
        raise Unauthenticated("no verified API key in this call")
    return principal
