"""One task-model training job, start to end: the body of the Celery task ``training.train`` for
``kind = task`` (``worker.py``), free of celery and grpc so it runs and is tested directly.

snapshot -> datasets (train / held-out) -> train (resumable) -> register the candidate -> evaluate it and
the current version (or the base model) on the held-out images -> gate -> promote and publish, or reject.

Every step is safe to repeat when a worker dies and the task is redelivered with the same operation id:
training resumes from its checkpoint (``VAR_DIR/training/jobs/<operation>/``), registration finds the
version this operation registered, and a version already decided (promoted or rejected) is returned as
it is, so a job is never promoted twice.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from services.common.errors import FailedPrecondition
from services.common.image_files import load_image
from services.training import task_model
from services.training.promotion import Publisher, promote
from services.training.publishing import CLICK_BASE, scripted_path, triton_model_name
from services.training.registry import CANDIDATE, REJECTED, Gate, ModelVersion, Registry
from services.training.reviews import ReviewStore
from services.training.snapshots import SnapshotStore, check_trainable
from services.training.task_config import TaskConfig, task_config

KIND = "task"
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


def command(project_id: str, snapshot_id: str, config: TaskConfig) -> str:
    """The call that reproduces the version (same snapshot, same configuration, same seed)."""
    request = {"project_id": project_id, "kind": "MODEL_KIND_TASK", "snapshot_id": snapshot_id, "task": asdict(config)}
    return f"annotation.v1.Training/StartTraining {json.dumps(request, sort_keys=True)}"


def result(mv: ModelVersion, message: str = "") -> dict:
    return {"model_version": mv.version, "state": mv.state.upper(), "kind": mv.kind.upper(),
            "snapshot_id": mv.snapshot_id, "figures": mv.figures, "gate": mv.gate,
            "triton_model_name": mv.triton_model_name, "message": message or mv.gate.get("reason", "")}


def run(ctx: Context, operation_id: str, project_id: str, snapshot_id: str, config_values: dict,
        progress: Progress = lambda done, total, message: None) -> dict:
    def report(fraction: float, message: str) -> None:
        progress(int(fraction * 1000), 1000, message)

    existing = ctx.registry.by_operation(operation_id)
    if existing is not None and existing.state != CANDIDATE:
        return result(existing, f"version {existing.version} was {existing.state} before this worker started")
    config = task_config(config_values)
    snapshot = ctx.snapshots.get(project_id, snapshot_id)
    check_trainable(snapshot)
    names = snapshot.class_names
    entries = ctx.snapshots.entries(project_id, snapshot_id)
    report(0.0, f"reading {snapshot.image_count} images")
    train_data = task_model.build_dataset(entries, names, config.image_size, False, ctx.load_image)
    heldout = task_model.build_dataset(entries, names, config.image_size, True, ctx.load_image)
    if len(train_data.images) == 0 or len(heldout.images) == 0:
        split = "training" if len(train_data.images) == 0 else "held-out"
        raise FailedPrecondition(f"no image of the {split} split of snapshot {snapshot_id} could be read "
                                 f"(unreadable: {(train_data.unreadable + heldout.unreadable)[:5]})",
                                 field="snapshot_id")
    current = ctx.registry.current(project_id, KIND)
    checkpoint = checkpoint_path(ctx.var_dir, operation_id)

    if existing is None or not Path(existing.artifact).is_file():
        net = task_model.train(train_data, len(names), config, checkpoint,
                               lambda done, total, message: report(0.05 + 0.85 * done / total, message))
        mv = ctx.registry.register(
            project_id=project_id, kind=KIND, operation_id=operation_id, snapshot_id=snapshot_id,
            parent_version=current.version if current else 0, command=command(project_id, snapshot_id, config),
            config=asdict(config), class_names=names,
            artifact=lambda version: str(artifact_path(ctx.var_dir, project_id, KIND, version)))
        task_model.save_weights(net, Path(mv.artifact), scripted_path(Path(mv.artifact)))
    else:
        mv = existing
        net = task_model.load_network(Path(mv.artifact), config.width, len(names))

    report(0.9, f"evaluating on {len(heldout.images)} held-out images")
    figures = task_model.evaluate(net, names, heldout, names)
    figures["train_images"] = float(len(train_data.images))
    figures["unreadable_images"] = float(len(train_data.unreadable) + len(heldout.unreadable))
    if current is not None:
        reference = task_model.evaluate(
            task_model.load_network(Path(current.artifact), int(current.config["width"]), len(current.class_names)),
            current.class_names, heldout, names)
    else:
        reference = task_model.prior_figures(train_data, heldout, names)
    gate = Gate("miou", figures["miou"], reference["miou"], current.version if current else 0,
                extra={"current_figures": reference})
    mv = ctx.registry.update(mv, figures=figures, gate=gate.record())
    if not gate.passed:
        mv = ctx.registry.update(mv, state=REJECTED)
    else:
        report(0.95, f"publishing version {mv.version}")
        try:
            mv = promote(ctx.registry, ctx.publisher, mv)
        except FailedPrecondition as exc:  # the current version changed under the job (a manual promotion)
            shutil.rmtree(checkpoint.parent, ignore_errors=True)
            return result(mv, f"left a candidate: {exc.message}")
    shutil.rmtree(checkpoint.parent, ignore_errors=True)
    return result(mv)
