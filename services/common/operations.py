"""Long-running operations: their records in Redis and their state read from Celery's backend.

An operation's id is its Celery task id. The record (kind, project, creation time) lives in Redis
so that operations can be listed per project; the state, progress and result come from the task.
"""

from __future__ import annotations

import base64
import json
import time
from dataclasses import dataclass, field

from redis import Redis

from services.common.errors import InvalidArgument, NotFound

# Celery task states -> annotation.v1.Operation.State names.
_STATES = {
    "PENDING": "PENDING", "RECEIVED": "PENDING", "STARTED": "RUNNING", "PROGRESS": "RUNNING",
    "RETRY": "RUNNING", "SUCCESS": "SUCCEEDED", "FAILURE": "FAILED", "REVOKED": "CANCELLED",
}


@dataclass(frozen=True)
class OperationRecord:
    id: str
    kind: str
    project_id: str
    create_time: float


@dataclass(frozen=True)
class OperationStatus:
    state: str
    progress: float = 0.0
    message: str = ""
    result: dict = field(default_factory=dict)
    error: str = ""


def status_from_task(celery_state: str, info) -> OperationStatus:
    state = _STATES.get(celery_state, "RUNNING")
    if state == "SUCCEEDED":
        result = info if isinstance(info, dict) else {"value": info}
        return OperationStatus(state, 1.0, "done", result)
    if state == "FAILED":
        return OperationStatus(state, message="failed", error=f"{type(info).__name__}: {info}")
    if state == "RUNNING" and isinstance(info, dict):
        return OperationStatus(state, float(info.get("progress", 0.0)), str(info.get("message", "")))
    return OperationStatus(state)


def _cursor(offset: int) -> str:
    return base64.urlsafe_b64encode(json.dumps({"o": offset}).encode()).decode()


def _offset(token: str) -> int:
    if not token:
        return 0
    try:
        offset = int(json.loads(base64.urlsafe_b64decode(token.encode()))["o"])
    except (ValueError, KeyError, TypeError):
        raise InvalidArgument("page.page_token", "not a token returned by this server")
    if offset < 0:
        raise InvalidArgument("page.page_token", "not a token returned by this server")
    return offset


class OperationStore:
    def __init__(self, redis: Redis, service: str, ttl_s: int) -> None:
        self._redis, self._service, self._ttl = redis, service, ttl_s

    def _key(self, op_id: str) -> str:
        return f"annot:op:{self._service}:{op_id}"

    def _index(self, project_id: str) -> str:
        return f"annot:ops:{self._service}:{project_id or '*'}"

    def create(self, op_id: str, kind: str, project_id: str) -> OperationRecord:
        record = OperationRecord(op_id, kind, project_id, time.time())
        pipe = self._redis.pipeline()
        pipe.set(self._key(op_id), json.dumps(record.__dict__), ex=self._ttl)
        pipe.zadd(self._index(project_id), {op_id: record.create_time})
        pipe.expire(self._index(project_id), self._ttl)
        pipe.execute()
        return record

    def get(self, op_id: str, project_id: str) -> OperationRecord:
        if not op_id:
            raise InvalidArgument("operation_id", "must not be empty")
        raw = self._redis.get(self._key(op_id))
        record = OperationRecord(**json.loads(raw)) if raw else None
        # Another project's operation is reported missing, so ids leak nothing across projects.
        if record is None or (project_id and record.project_id != project_id):
            raise NotFound(f"no operation {op_id!r}", field="operation_id")
        return record

    def list(self, project_id: str, page_size: int, page_token: str) -> tuple[list[OperationRecord], str, int]:
        size = min(page_size or 50, 500)
        start = _offset(page_token)
        index = self._index(project_id)
        self._redis.zremrangebyscore(index, 0, time.time() - self._ttl)
        ids = self._redis.zrevrange(index, start, start + size - 1)
        total = self._redis.zcard(index)
        records = [OperationRecord(**json.loads(raw)) for raw in self._redis.mget(
            [self._key(i.decode()) for i in ids]) if raw] if ids else []
        next_token = _cursor(start + size) if start + size < total else ""
        return records, next_token, total
