"""Domain errors. Plain modules raise these; the gRPC and REST adapters map them to status codes.

Every error names what was wrong: ``field`` is the dotted path of the offending request field
(``clicks[2].x``) where there is one.
"""

from __future__ import annotations


class DomainError(Exception):
    """Base class; ``code`` is the canonical status name shared by gRPC and the REST mapping."""

    code = "INTERNAL"
    http_status = 500
    # REST's ``details``: every ErrorDetail of a service's answer the gateway relays; None: no such list.
    details: list[dict] | None = None

    def __init__(self, message: str, *, field: str = "", reason: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.field = field
        self.reason = reason or self.code

    def __str__(self) -> str:
        return f"{self.field}: {self.message}" if self.field else self.message


class InvalidArgument(DomainError):
    code = "INVALID_ARGUMENT"
    http_status = 422

    def __init__(self, field: str, message: str, *, reason: str = "") -> None:
        super().__init__(message, field=field, reason=reason)


class NotFound(DomainError):
    code = "NOT_FOUND"
    http_status = 404


class AlreadyExists(DomainError):
    code = "ALREADY_EXISTS"
    http_status = 409


class FailedPrecondition(DomainError):
    code = "FAILED_PRECONDITION"
    http_status = 409


class Unauthenticated(DomainError):
    code = "UNAUTHENTICATED"
    http_status = 401


class PermissionDenied(DomainError):
    code = "PERMISSION_DENIED"
    http_status = 403


class ResourceExhausted(DomainError):
    code = "RESOURCE_EXHAUSTED"
    http_status = 429


class Unavailable(DomainError):
    """A dependency (Redis, Triton, the database) is down or timed out."""

    code = "UNAVAILABLE"
    http_status = 503


class DeadlineExceeded(DomainError):
    code = "DEADLINE_EXCEEDED"
    http_status = 504
