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
from dataclasses import asdict
from pathlib import Path

from services.training import task_model
from services.training.job_context import (
    Context,
    Progress,
    artifact_path,
    check_splits_read,
    checkpoint_path,
    decide,
    fraction_reporter,
    registered,
)
from services.training.publishing import scripted_path
from services.training.registry import Gate
from services.training.snapshots import check_trainable
from services.training.task_config import TaskConfig, task_config

KIND = "task"


def command(project_id: str, snapshot_id: str, config: TaskConfig) -> str:
    """The call that reproduces the version (same snapshot, same configuration, same seed)."""
    request = {"project_id": project_id, "kind": "MODEL_KIND_TASK", "snapshot_id": snapshot_id, "task": asdict(config)}
    return f"annotation.v1.Training/StartTraining {json.dumps(request, sort_keys=True)}"


def run(ctx: Context, operation_id: str, project_id: str, snapshot_id: str, config_values: dict,
        progress: Progress = lambda done, total, message: None) -> dict:
    report = fraction_reporter(progress)
    existing, decided = registered(ctx, operation_id)
    if decided is not None:
        return decided
    config = task_config(config_values)
    snapshot = ctx.snapshots.get(project_id, snapshot_id)
    check_trainable(snapshot)
    names = snapshot.class_names
    entries = ctx.snapshots.entries(project_id, snapshot_id)
    report(0.0, f"reading {snapshot.image_count} images")
    train_data = task_model.build_dataset(entries, names, config.image_size, False, ctx.load_image)
    heldout = task_model.build_dataset(entries, names, config.image_size, True, ctx.load_image)
    check_splits_read(snapshot_id, len(train_data.images), len(heldout.images),
                      train_data.unreadable + heldout.unreadable)
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
    return decide(ctx, mv, figures, gate, report, checkpoint)
