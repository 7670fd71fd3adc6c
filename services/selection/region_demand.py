"""Demand for region granularities: a pool is asked (SelectBatch) for a patch size or superpixel count it has no
scores for, so selection scores that spec from then on.

Nobody else starts region scoring in a deployment (StartScoring is an admin's call), so a wanted spec is
persisted per pool: ``rescore_project`` scores it after every promoted task model, and when the pool already
holds a task model's stored predictions, one scoring of the spec is enqueued right away. The spec's last
enqueued operation is kept so that repeated requests while it is pending or running send nothing more.
Plain domain code: enqueueing and reading an operation's state are the caller's callables (Celery in the server).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import sessionmaker

from services.selection.pool import PoolStore
from services.selection.scoring import RegionSpec
from services.selection.tables import WantedRegionRow

MAX_WANTED = 8  # region specs remembered per pool: each one is scored after every task model


def spec_of(key: str) -> RegionSpec:
    granularity, _, scale = key.partition(":")
    return RegionSpec(granularity, int(scale or 0))


@dataclass(frozen=True)
class Demand:
    """What asking for ``spec`` did: ``state`` is ``enqueued`` (a scoring was sent now), ``pending`` (one sent
    earlier is still pending or running), ``after_task_model`` (no stored predictions yet: scored after the first
    promoted task model) or ``refused`` (the pool already wants ``MAX_WANTED`` other specs)."""
    spec: RegionSpec
    state: str
    operation_id: str = ""

    def explain(self, pool_id: str) -> str:
        head = f"pool {pool_id!r} has no scores for {self.spec.key}"
        if self.state in ("enqueued", "pending"):
            return f"{head} yet; it is being scored now (operation {self.operation_id}), ask again when that is done"
        if self.state == "after_task_model":
            return (f"{head} yet; it will be scored once a task model has predicted the pool "
                    "(after the project's first promoted task model)")
        return (f"{head}, and it already wants {MAX_WANTED} other region specs; run StartScoring "
                "(only uniform selects among unscored images)")


class RegionDemand:
    """The wanted region specs of pools, in SQL (``selection_wanted_regions``)."""

    def __init__(self, sessions: sessionmaker) -> None:
        self._sessions = sessions

    def want(self, project_id: str, pool_id: str, spec: RegionSpec) -> bool:
        """Records ``spec`` as wanted by the pool (idempotent); False when the pool already wants ``MAX_WANTED``
        other specs."""
        with self._sessions.begin() as session:
            keys = set(session.scalars(select(WantedRegionRow.region_key).where(
                WantedRegionRow.project_id == project_id, WantedRegionRow.pool_id == pool_id)))
            if spec.key in keys:
                return True
            if len(keys) >= MAX_WANTED:
                return False
        try:
            with self._sessions.begin() as session:
                session.add(WantedRegionRow(project_id=project_id, pool_id=pool_id, region_key=spec.key,
                                            wanted_at=datetime.now(UTC)))
        except IntegrityError:
            pass  # a concurrent request recorded it first
        return True

    def wanted(self, project_id: str, pool_id: str) -> list[RegionSpec]:
        with self._sessions() as session:
            return [spec_of(key) for key in sorted(session.scalars(select(WantedRegionRow.region_key).where(
                WantedRegionRow.project_id == project_id, WantedRegionRow.pool_id == pool_id)))]

    def operation(self, project_id: str, pool_id: str, spec: RegionSpec) -> str | None:
        """The id of the last scoring enqueued for the wanted ``spec`` (None: none yet)."""
        with self._sessions() as session:
            return session.scalar(select(WantedRegionRow.operation_id).where(
                WantedRegionRow.project_id == project_id, WantedRegionRow.pool_id == pool_id,
                WantedRegionRow.region_key == spec.key))

    def claim(self, project_id: str, pool_id: str, spec: RegionSpec, seen: str | None, operation_id: str) -> bool:
        """Names ``operation_id`` the spec's scoring unless another request replaced ``seen`` first (compare and
        set, so two concurrent requests enqueue one scoring)."""
        with self._sessions.begin() as session:
            return session.execute(update(WantedRegionRow).where(
                WantedRegionRow.project_id == project_id, WantedRegionRow.pool_id == pool_id,
                WantedRegionRow.region_key == spec.key,
                WantedRegionRow.operation_id.is_(None) if seen is None else WantedRegionRow.operation_id == seen)
                .values(operation_id=operation_id)).rowcount == 1


def ask_for_region(demand: RegionDemand, pools: PoolStore, project_id: str, pool_id: str, spec: RegionSpec,
                   new_operation_id: Callable[[], str], running: Callable[[str], bool],
                   enqueue: Callable[[str, RegionSpec], None]) -> Demand:
    """The pool has no scores for the region ``spec``: records it as wanted and, when the pool holds stored
    predictions, enqueues one scoring of it from them (``enqueue(operation_id, spec)``) unless the one enqueued
    before is still ``running`` (pending or in progress)."""
    if not demand.want(project_id, pool_id, spec):
        return Demand(spec, "refused")
    if pools.get_pool(project_id, pool_id).predicted_count == 0:
        return Demand(spec, "after_task_model")
    seen = demand.operation(project_id, pool_id, spec)
    if seen and running(seen):
        return Demand(spec, "pending", seen)
    operation_id = new_operation_id()
    if not demand.claim(project_id, pool_id, spec, seen, operation_id):
        return Demand(spec, "pending", demand.operation(project_id, pool_id, spec) or "")
    enqueue(operation_id, spec)
    return Demand(spec, "enqueued", operation_id)
