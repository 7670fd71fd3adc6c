"""Per-key rate limits (token buckets) and request body size limits.

A bucket per API key id, refilled at ``rate_per_s`` up to ``burst``; an empty bucket answers 429
with ``Retry-After``. Body sizes are checked from Content-Length before anything is read, and while
streaming for chunked bodies, so an oversized upload is refused without being buffered.
"""

from __future__ import annotations

import json
import math
import threading
import time

from starlette.types import ASGIApp, Receive, Scope, Send

from services.common.errors import ResourceExhausted


class RateLimiter:
    def __init__(self, rate_per_s: float, burst: int) -> None:
        self.rate, self.burst = rate_per_s, burst
        self._buckets: dict[str, tuple[float, float]] = {}  # key id -> (tokens, last time)
        self._lock = threading.Lock()

    def take(self, key_id: str) -> None:
        now = time.monotonic()
        with self._lock:
            tokens, last = self._buckets.get(key_id, (float(self.burst), now))
            tokens = min(self.burst, tokens + (now - last) * self.rate)
            if tokens < 1:
                self._buckets[key_id] = (tokens, now)
                wait = math.ceil((1 - tokens) / self.rate)
                raise RateLimited(wait)
            self._buckets[key_id] = (tokens - 1, now)


class RateLimited(ResourceExhausted):
    def __init__(self, retry_after_s: int) -> None:
        super().__init__(f"rate limit of this API key exceeded; retry after {retry_after_s} s")
        self.retry_after_s = retry_after_s


class BodySizeLimit:
    """ASGI middleware: 413 for a body over the limit (uploads under ``upload_prefix`` get more)."""

    def __init__(self, app: ASGIApp, max_bytes: int, max_upload_bytes: int, upload_suffix: str) -> None:
        self.app = app
        self.max_bytes, self.max_upload_bytes, self.upload_suffix = max_bytes, max_upload_bytes, upload_suffix

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.max_upload_bytes if scope["path"].endswith(self.upload_suffix) else self.max_bytes
        headers = dict(scope.get("headers") or [])
        length = headers.get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > limit):
            await _too_large(send, limit)
            return
        received = 0
        refused = answered = False

        async def counting_receive():
            nonlocal received, refused
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    refused = True
                    raise BodyTooLarge()
            return message

        async def guarded_send(message) -> None:
            # FastAPI turns any exception raised while reading the body into its own 400: once the
            # body is refused, whatever the app answers is replaced by the 413.
            nonlocal answered
            if not refused:
                await send(message)
            elif not answered:
                answered = True
                await _too_large(send, limit)

        try:
            await self.app(scope, counting_receive, guarded_send)
        except BodyTooLarge:
            if refused and not answered:
                answered = True
                await _too_large(send, limit)


class BodyTooLarge(Exception):
    pass


async def _too_large(send: Send, limit: int) -> None:
    body = json.dumps({"error": {"code": "RESOURCE_EXHAUSTED", "field": "body",
                                 "message": f"request body over the limit of {limit} bytes"}}).encode()
    await send({"type": "http.response.start", "status": 413,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
