"""Ingest: admit events against each session's state in Redis, then hand them to the queue in one message.

Order of one ingest step (a RecordBatch, or one chunk of a Record stream):

1. back-pressure: wait while more than ``max_queue_messages`` batches wait to be stored, at most
   ``backpressure_wait_s`` and never past the caller's deadline, then refuse (RESOURCE_EXHAUSTED);
2. admission (``admit.lua``, atomic): unknown session, project mismatch, another annotator's session
   (PERMISSION_DENIED: a session belongs to the annotator its session_start names, which for an
   annotator's key is the key itself), seq conflicts, event ids reused at another seq, times going
   backwards against the neighbouring seqs; duplicates (same event_id at the same seq) are
   recognised; gaps in seq are tracked;
3. the admitted events *and the duplicates* go to the outbox as one batch, and its id to the queue.
   Sending duplicates again costs the worker a few rows that ``ON CONFLICT DO NOTHING`` drops, and
   closes the window where a server died between admission and enqueueing: a retry of an
   unacknowledged call always reaches the store. The caller is acknowledged only after the batch is
   in the outbox and its id on the queue (Redis with AOF); see ``outbox.py`` for why both.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from redis import Redis
from redis.exceptions import OutOfMemoryError, RedisError

from annotation.v1 import byproducts_pb2 as pb
from services.byproducts.config import ByproductsSettings
from services.byproducts.outbox import Outbox
from services.common.errors import DomainError, InvalidArgument, PermissionDenied, ResourceExhausted, Unavailable
from services.common.request_context import time_remaining

ADMIT_LUA = (Path(__file__).with_name("admit.lua")).read_text()
QUEUE = "byproducts"


def encode_batch(events: Sequence[pb.Event]) -> str:
    """One queue message's payload: the events as one serialized EventBatch, base64 (JSON-safe)."""
    return base64.b64encode(pb.EventBatch(events=events).SerializeToString()).decode()


def decode_batch(payload: str) -> list[pb.Event]:
    return list(pb.EventBatch.FromString(base64.b64decode(payload)).events)


@dataclass
class Admission:
    """What became of each event of one step; ``errors`` name fields as ``events[i].<field>``
    (PermissionDenied for an event into another annotator's session, InvalidArgument otherwise)."""

    new: list[pb.Event] = field(default_factory=list)
    duplicates: list[pb.Event] = field(default_factory=list)
    errors: list[DomainError] = field(default_factory=list)
    gaps: dict[str, list[tuple[int, int]]] = field(default_factory=dict)


class Ingestor:
    """Admission and enqueueing; ``enqueue(batch_id)`` puts one message on the queue."""

    def __init__(self, redis: Redis, enqueue: Callable[[str], None], config: ByproductsSettings) -> None:
        self._redis = redis
        self._enqueue = enqueue
        self._config = config
        self._admit = redis.register_script(ADMIT_LUA)
        self.outbox = Outbox(redis, config.redeliver_after_s)

    def queue_depth(self) -> int:
        return int(self._redis.llen(QUEUE))

    def backlog(self) -> int:
        """Batches admitted but not stored yet. The outbox counts those a worker holds for a retry too:
        while the store refuses writes, a worker drains the queue into delayed retries, and the queue's
        length alone would let ingest accept without bound (tests/chaos/test_store_full.py)."""
        return max(self.queue_depth(), self.outbox.size())

    def wait_for_room(self) -> None:
        wait_s = min(self._config.backpressure_wait_s, time_remaining(self._config.backpressure_wait_s))
        deadline = time.monotonic() + wait_s
        while True:
            backlog = self._call(self.backlog)
            if backlog <= self._config.max_queue_messages:
                return
            if time.monotonic() >= deadline:
                raise ResourceExhausted(
                    f"byproducts backlog holds {backlog} batches not stored yet (limit "
                    f"{self._config.max_queue_messages}); nothing of this request was accepted, retry later",
                    field="events", reason="QUEUE_FULL")
            time.sleep(0.05)

    def admit(self, events: Sequence[pb.Event], positions: Sequence[int], all_or_nothing: bool,
              actor: str = "") -> Admission:
        """Check ``events`` (named ``events[positions[k]]``) against the sessions' state and record them.

        ``actor``: the annotator the caller is limited to (an annotator's key id); events into a session
        another annotator owns are refused. Empty: any session (reviewers, admins, the worker).

        ``all_or_nothing``: every problem is reported and nothing is recorded if there is one; the events
        are checked in (session, seq) order, so a batch may hold a session's start after its other events.
        Otherwise events are checked in the given order and those before the first problem are recorded.
        """
        order = sorted(range(len(events)), key=lambda k: (events[k].session_id, events[k].seq)) \
            if all_or_nothing else range(len(events))
        args: list = ["all" if all_or_nothing else "prefix", self._config.session_state_ttl_s]
        for k in order:
            e = events[k]
            start = e.WhichOneof("payload") == "session_start"
            args += [e.session_id, e.event_id, e.seq, e.t_ms, e.project_id, "1" if start else "0",
                     e.session_start.session.annotator_id if start else "", actor]
        statuses, gaps = self._call(lambda: self._admit(args=args))
        admission = Admission()
        for k, status in zip(order, statuses):
            status = status.decode()
            if status == "N":
                admission.new.append(events[k])
            elif status == "D":
                admission.duplicates.append(events[k])
            else:
                _, suffix, reason, message = status.split("|", 3)
                name = f"events[{positions[k]}].{suffix}"
                admission.errors.append(PermissionDenied(message, field=name, reason=reason)
                                        if reason == "NOT_SESSION_OWNER" else InvalidArgument(name, message, reason=reason))
        admission.errors.sort(key=lambda error: _position(error.field))
        for i in range(0, len(gaps), 2):
            ranges = _json_ranges(gaps[i + 1])
            if ranges:
                admission.gaps[gaps[i].decode()] = ranges
        return admission

    def send(self, events: Sequence[pb.Event]) -> None:
        if events:
            batch_id = self._call(lambda: self.outbox.put(encode_batch(events), int(time.time() * 1000)))
            self._call(lambda: self._enqueue(batch_id))

    def redeliver_due(self) -> int:
        """Send again the ids of outbox batches not stored in time; how many were sent.

        At most as many as the queue has room for under its back-pressure bound: while a consumer is
        stalled its batches are waiting on the queue, not lost, and re-sending every one of them each
        round grew the queue past the bound without limit (found by tests/chaos/test_backpressure.py).
        Batches not claimed now stay due for a later round."""
        room = self._config.max_queue_messages - self._call(self.queue_depth)
        if room <= 0:
            return 0
        due = self._call(lambda: self.outbox.claim_due(limit=room))
        for batch_id in due:
            self._call(lambda: self._enqueue(batch_id))
        return len(due)

    @staticmethod
    def _call(function):
        try:
            return function()
        except OutOfMemoryError as exc:  # maxmemory with noeviction: a full broker, not a broken one
            raise ResourceExhausted(
                "the byproducts queue (Redis) is out of memory (maxmemory reached); nothing of this request "
                "was stored, retry it unchanged later", field="events", reason="BROKER_FULL") from exc
        except (RedisError, OSError) as exc:
            raise Unavailable(f"the byproducts queue (Redis) is unreachable: {exc.__class__.__name__}") from exc


def _position(field_name: str) -> int:
    return int(field_name[len("events["):field_name.index("]")])


def _json_ranges(raw: bytes) -> list[tuple[int, int]]:
    value = json.loads(raw)
    return [(int(first), int(last)) for first, last in value] if isinstance(value, list) else []
