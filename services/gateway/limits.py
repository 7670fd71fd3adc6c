"""Per-key rate limits (token buckets), request body size limits, and no NUL characters.

A bucket per API key id, refilled at ``rate_per_s`` up to ``burst``; an empty bucket answers 429
with ``Retry-After``. Body sizes are checked from Content-Length before anything is read, and while
streaming for chunked bodies, so an oversized upload is refused without being buffered.
"""

from __future__ import annotations

import json
import math
import threading
import time
from urllib.parse import parse_qsl

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
    """ASGI middleware: 413 for a body over the limit (upload paths, by suffix, get their own)."""

    def __init__(self, app: ASGIApp, max_bytes: int, upload_limits: dict[str, int]) -> None:
        self.app = app
        self.max_bytes, self.upload_limits = max_bytes, upload_limits

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = next((n for suffix, n in self.upload_limits.items() if scope["path"].endswith(suffix)), self.max_bytes)
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


class NoNulCharacters:
    """ASGI middleware: 422 for a NUL character in the path, the query or a JSON body's strings.

    PostgreSQL text columns cannot hold NUL, so such a value reaching the store failed with a 500;
    refused here once for every route, the error naming where it was (``path``, ``query``, or the
    JSON path of the string, ``labels[0]``). Runs inside BodySizeLimit, so a JSON body it buffers
    is within the request limit.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if "\x00" in scope["path"]:
            await _invalid(send, "path", "the path contains a NUL character")
            return
        query = scope.get("query_string", b"")
        if b"%00" in query or b"\x00" in query:
            names = [name for name, value in parse_qsl(query.decode("latin-1"), keep_blank_values=True)
                     if "\x00" in name + value]
            await _invalid(send, names[0] if names and "\x00" not in names[0] else "query",
                           "the query contains a NUL character")
            return
        headers = dict(scope.get("headers") or [])
        media_type = headers.get(b"content-type", b"").split(b";")[0].strip().lower()
        if media_type and not media_type.endswith((b"/json", b"+json")):  # FastAPI reads JSON without a type too
            await self.app(scope, receive, send)
            return
        chunks, more = [], True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                break
            chunks.append(message.get("body", b""))
            more = message.get("more_body", False)
        body = b"".join(chunks)
        if b"\\u0000" in body or b"\x00" in body:
            field = _nul_field(body)
            if field is not None:
                await _invalid(send, field, "NUL characters are not allowed in text")
                return
        replayed = False

        async def replay():
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


def _nul_field(body: bytes) -> str | None:
    """The JSON path of the first string (or key) holding a NUL, "body" for raw NUL bytes, None if
    the body is no JSON at all (the route then refuses it as such)."""
    try:
        document = json.loads(body)
    except (ValueError, RecursionError):
        return "body" if b"\x00" in body else None
    stack = [(document, "")]
    while stack:
        value, path = stack.pop()
        if isinstance(value, str) and "\x00" in value:
            return path or "body"
        if isinstance(value, dict):
            for key, item in value.items():
                if "\x00" in key:
                    return path or "body"
                stack.append((item, f"{path}.{key}" if path else key))
        elif isinstance(value, list):
            stack.extend((item, f"{path}[{index}]") for index, item in enumerate(value))
    return None


async def _invalid(send: Send, field: str, message: str) -> None:
    body = json.dumps({"error": {"code": "INVALID_ARGUMENT", "field": field, "message": message}}).encode()
    await send({"type": "http.response.start", "status": 422,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
