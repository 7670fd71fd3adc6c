"""The byproducts outbox: an admitted batch stays in Redis until the worker has stored it.

Why not rely on the queue alone: kombu's Redis transport pops a message (BRPOP) and only then records
it as unacknowledged, so a worker killed -9 between the two loses that message for good; acks_late
cannot bring it back. The queue message therefore carries only a batch id. The batch waits here until
it is persisted, and ``claim_due`` hands back the ids of batches still waiting ``redeliver_after_s``
after they were (re)sent, to be sent again. A re-sent id whose batch is already stored finds nothing.
"""

from __future__ import annotations

import json
import time
import uuid

from redis import Redis

BATCHES = "bp:outbox"  # hash: batch id -> {"payload", "received_ms"}
DUE = "bp:outbox:due"  # zset: batch id -> when to send it again (ms since the epoch)

# Atomically take the due ids and push their next due time, so that two sweeping servers never both
# re-send the same batch in one round.
_CLAIM_LUA = """
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[3]))
for _, id in ipairs(due) do redis.call('ZADD', KEYS[1], ARGV[2], id) end
return due
"""


class Outbox:
    def __init__(self, redis: Redis, redeliver_after_s: float) -> None:
        self._redis = redis
        self._after_ms = int(redeliver_after_s * 1000)
        self._claim = redis.register_script(_CLAIM_LUA)

    def put(self, payload: str, received_ms: int) -> str:
        batch_id = uuid.uuid4().hex
        pipe = self._redis.pipeline(transaction=True)
        pipe.hset(BATCHES, batch_id, json.dumps({"payload": payload, "received_ms": received_ms}))
        pipe.zadd(DUE, {batch_id: _now_ms() + self._after_ms})
        pipe.execute()
        return batch_id

    def get(self, batch_id: str) -> tuple[str, int] | None:
        """The batch's payload and receive time, or None once it was stored (or never existed)."""
        raw = self._redis.hget(BATCHES, batch_id)
        if raw is None:
            return None
        entry = json.loads(raw)
        return entry["payload"], int(entry["received_ms"])

    def done(self, batch_id: str) -> None:
        pipe = self._redis.pipeline(transaction=True)
        pipe.hdel(BATCHES, batch_id)
        pipe.zrem(DUE, batch_id)
        pipe.execute()

    def claim_due(self, limit: int = 500, now_ms: int | None = None) -> list[str]:
        now_ms = _now_ms() if now_ms is None else now_ms
        ids = self._claim(keys=[DUE], args=[now_ms, now_ms + self._after_ms, limit])
        return [batch_id.decode() for batch_id in ids]

    def size(self) -> int:
        return int(self._redis.hlen(BATCHES))


def _now_ms() -> int:
    return int(time.time() * 1000)
