"""Promotion and rollback: the registry's state changes that publish, shared by the training job (a
candidate past the gate) and the gRPC API (PromoteModelVersion, RollbackModelVersion).

Triton is told first and the registry follows: when Triton refuses (UNAVAILABLE), nothing changed and
the call can be repeated; a repeated promotion of the current version changes nothing.
"""

from __future__ import annotations

from typing import Protocol

from services.common.errors import FailedPrecondition, InvalidArgument
from services.training.registry import PROMOTED, REJECTED, ROLLED_BACK, ModelVersion, Registry


class Publisher(Protocol):
    def publish(self, mv: ModelVersion) -> str:
        """Serves ``mv``; returns the Triton model name."""

    def withdraw(self, project_id: str, kind: str) -> None:
        """Serves no model of the project's ``kind`` (the base model)."""


def passed_against_current(mv: ModelVersion, current: ModelVersion | None) -> bool:
    """Whether ``mv``'s recorded gate was passed against the version that is current now."""
    return bool(mv.gate.get("passed")) and int(mv.gate.get("current_version", -1)) == (current.version if current else 0)


def _why_not(mv: ModelVersion, current: ModelVersion | None) -> str:
    """Why ``mv`` may not be promoted without force; empty when it may."""
    if mv.state in (REJECTED, ROLLED_BACK):
        return f"it was {mv.state.replace('_', ' ')}"
    if not mv.gate:
        return "it has no gate decision"
    if not mv.gate.get("passed"):
        return f"it failed the gate: {mv.gate.get('reason', '')}"
    if not passed_against_current(mv, current):
        return (f"it was gated against version {mv.gate.get('current_version')}, the current version is "
                f"{current.version if current else 0}")
    return ""


def promote(registry: Registry, publisher: Publisher, mv: ModelVersion, force: bool = False,
            reason: str = "") -> ModelVersion:
    current = registry.current(mv.project_id, mv.kind)
    if current is not None and current.version == mv.version:
        raise FailedPrecondition(f"{mv.kind} version {mv.version} is already the current version", field="version")
    gate = dict(mv.gate)
    why_not = _why_not(mv, current)
    if why_not:
        if not force:
            raise FailedPrecondition(f"{mv.kind} version {mv.version} is promoted only past the gate ({why_not}); "
                                     "promote it with force and a reason", field="force")
        if not reason:
            raise InvalidArgument("reason", "required when promoting with force", reason="REQUIRED")
        gate.update(forced=True, forced_reason=reason, forced_over_version=current.version if current else 0)
    name = publisher.publish(mv)
    return registry.update(mv, state=PROMOTED, gate=gate, triton_model_name=name)


def rollback(registry: Registry, publisher: Publisher, project_id: str, kind: str,
             reason: str = "") -> tuple[ModelVersion, ModelVersion | None]:
    """The current version becomes rolled back; the one promoted before it (if any) is current again."""
    current = registry.current(project_id, kind)
    if current is None:
        raise FailedPrecondition(f"project {project_id!r} has no current {kind} model: it is on the base model",
                                 field="kind")
    previous = registry.previous(project_id, kind, current.version)
    if previous is not None:
        publisher.publish(previous)
    else:
        publisher.withdraw(project_id, kind)
    rolled = registry.update(current, state=ROLLED_BACK, gate={**current.gate, "rollback_reason": reason})
    return rolled, previous

