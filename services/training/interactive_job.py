"""One interactive-network job, start to end: the body of ``training.train`` for ``kind = interactive``.

snapshot -> per-annotation samples (train / held-out) -> fine-tune the current version (or the served
base network) with the iterative click simulation (resumable) -> register the candidate -> NoC@85/90 of
it and of the current version (or the base) with the standard clicker on the held-out annotations ->
gate -> promote and publish into Triton as the project's next version, or reject.

Repeating it after a worker died is safe exactly as for the task model (``task_job.py``): training
resumes from the checkpoint, registration finds this operation's version, a decided version is returned
as it is.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

from services.training import interactive_model
from services.training.job_config import InteractiveConfig, interactive_config
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

KIND = "interactive"
METRIC = "noc85+noc90"  # mean clicks to 85% plus mean clicks to 90% IoU: lower is better


def command(project_id: str, snapshot_id: str, config: InteractiveConfig) -> str:
    request = {"project_id": project_id, "kind": "MODEL_KIND_INTERACTIVE", "snapshot_id": snapshot_id,
               "interactive": asdict(config)}
    return f"annotation.v1.Training/StartTraining {json.dumps(request, sort_keys=True)}"


def _score(figures: dict) -> float:
    return figures["noc85"] + figures["noc90"]


def run(ctx: Context, operation_id: str, project_id: str, snapshot_id: str, config_values: dict,
        progress: Progress = lambda done, total, message: None) -> dict:
    report = fraction_reporter(progress)
    existing, decided = registered(ctx, operation_id)
    if decided is not None:
        return decided
    config = interactive_config(config_values)
    snapshot = ctx.snapshots.get(project_id, snapshot_id)
    check_trainable(snapshot)
    entries = ctx.snapshots.entries(project_id, snapshot_id)
    report(0.0, f"reading {snapshot.image_count} images")
    train_samples, train_unreadable = interactive_model.build_samples(entries, False, ctx.load_image)
    heldout, heldout_unreadable = interactive_model.build_samples(entries, True, ctx.load_image)
    check_splits_read(snapshot_id, len(train_samples), len(heldout), train_unreadable + heldout_unreadable)
    current = ctx.registry.current(project_id, KIND)
    base_config = interactive_model.load_base(ctx.click_base)[1]
    config = interactive_model.resolved(config, base_config)  # the registry records the crop size used
    checkpoint = checkpoint_path(ctx.var_dir, operation_id)

    if existing is None or not Path(existing.artifact).is_file():
        # Fine-tune what serves the project now: its current version, else the base network.
        start = interactive_model.load_version(Path(current.artifact))[0] if current else \
            interactive_model.load_base(ctx.click_base)[0]
        net = interactive_model.fine_tune(start, base_config, train_samples, config, checkpoint,
                                          lambda done, total, message: report(0.05 + 0.75 * done / total, message))
        mv = ctx.registry.register(
            project_id=project_id, kind=KIND, operation_id=operation_id, snapshot_id=snapshot_id,
            parent_version=current.version if current else 0, command=command(project_id, snapshot_id, config),
            config={**asdict(config), "base": Path(ctx.click_base).name}, class_names=[],
            artifact=lambda version: str(artifact_path(ctx.var_dir, project_id, KIND, version)))
        interactive_model.save(net, base_config, Path(mv.artifact), scripted_path(Path(mv.artifact)))
    else:
        mv = existing
        net = interactive_model.load_version(Path(mv.artifact))[0]

    report(0.8, f"NoC of the candidate on {len(heldout)} held-out annotations")
    figures = interactive_model.noc_figures(net, base_config, heldout)
    figures["train_objects"] = float(len(train_samples))
    figures["unreadable_images"] = float(len(train_unreadable) + len(heldout_unreadable))
    report(0.9, f"NoC of {f'version {current.version}' if current else 'the base network'}")
    reference_net = interactive_model.load_version(Path(current.artifact))[0] if current else \
        interactive_model.load_base(ctx.click_base)[0]
    reference = interactive_model.noc_figures(reference_net, base_config, heldout)
    gate = Gate(METRIC, _score(figures), _score(reference), current.version if current else 0,
                higher_is_better=False, extra={"current_figures": reference})
    return decide(ctx, mv, figures, gate, report, checkpoint)
