"""What every training job (``task_job``, ``interactive_job``, ``quality_job``) shares: the stores and
folders it works with (``Context``), where its checkpoint and a version's weights live, the operation's
result, the steps each job begins with (a version already decided is returned as it is; progress as a
fraction; a split that could not be read is refused) and the one it ends with (the gate's decision)."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from services.common.errors import FailedPrecondition
from services.common.image_files import load_image
from services.training.promotion import Publisher, promote
from services.training.publishing import CLICK_BASE, triton_model_name
from services.training.registry import CANDIDATE, REJECTED, Gate, ModelVersion, Registry
from services.training.reviews import ReviewStore
from services.training.snapshots import SnapshotStore

Progress = Callable[[int, int, str], None]


@dataclass
class Context:
    snapshots: SnapshotStore
    registry: Registry
    publisher: Publisher
    var_dir: Path
    load_image: Callable = load_image
    click_base: Path = CLICK_BASE  # the served click network the interactive job fine-tunes
    reviews: ReviewStore | None = None  # reviewed sessions, what the quality job trains on


def checkpoint_path(var_dir: Path, operation_id: str) -> Path:
    return Path(var_dir) / "training" / "jobs" / operation_id / "checkpoint.pt"


def artifact_path(var_dir: Path, project_id: str, kind: str, version: int) -> Path:
    return Path(var_dir) / "training" / "models" / triton_model_name(project_id, kind) / str(version) / "weights.pt"


def result(mv: ModelVersion, message: str = "") -> dict:
    return {"model_version": mv.version, "state": mv.state.upper(), "kind": mv.kind.upper(),
            "snapshot_id": mv.snapshot_id, "figures": mv.figures, "gate": mv.gate,
            "triton_model_name": mv.triton_model_name, "message": message or mv.gate.get("reason", "")}


def registered(ctx: Context, operation_id: str) -> tuple[ModelVersion | None, dict | None]:
    """The version this operation registered before (a redelivered job), and its result when it was already
    decided (promoted or rejected): then the job returns that, so nothing is promoted twice."""
    existing = ctx.registry.by_operation(operation_id)
    if existing is not None and existing.state != CANDIDATE:
        return existing, result(existing, f"version {existing.version} was {existing.state} before this worker started")
    return existing, None


def fraction_reporter(progress: Progress) -> Callable[[float, str], None]:
    """``report(fraction, message)``: a job's progress in thousandths."""
    return lambda fraction, message: progress(int(fraction * 1000), 1000, message)


def check_splits_read(snapshot_id: str, train_count: int, heldout_count: int, unreadable: list) -> None:
    """FAILED_PRECONDITION when no image of a split could be read (both are needed: one trains, one gates)."""
    if train_count == 0 or heldout_count == 0:
        split = "training" if train_count == 0 else "held-out"
        raise FailedPrecondition(f"no image of the {split} split of snapshot {snapshot_id} could be read "
                                 f"(unreadable: {unreadable[:5]})", field="snapshot_id")


def decide(ctx: Context, mv: ModelVersion, figures: dict, gate: Gate, report: Callable[[float, str], None],
           checkpoint: Path | None = None) -> dict:
    """Records the candidate's figures and gate, then promotes (publishing it) or rejects it; the job's
    checkpoint folder goes either way. A current version changed under the job (a manual promotion) leaves
    the candidate undecided, said in the result."""
    mv = ctx.registry.update(mv, figures=figures, gate=gate.record())
    message = ""
    if not gate.passed:
        mv = ctx.registry.update(mv, state=REJECTED)
    else:
        report(0.95, f"publishing version {mv.version}")
        try:
            mv = promote(ctx.registry, ctx.publisher, mv)
        except FailedPrecondition as exc:
            message = f"left a candidate: {exc.message}"
    if checkpoint is not None:
        shutil.rmtree(checkpoint.parent, ignore_errors=True)
    return result(mv, message)
