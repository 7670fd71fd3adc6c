"""The loop, measured: a simulated project through the running platform's APIs, annotated in rounds, the
models trained between rounds.

    python -m bench.loop --data ../shared/data/video --sequence dog --out var/bench/loop-dog.json
    python -m bench.loop --data ../shared/data/grabcut --out var/bench/loop-grabcut.json

DIR holds ``images/`` + ``masks/`` (one project) or the video layout (``<sequence>/frames`` +
``<sequence>/masks``, each sequence one project: the same object recurs, as in a real project). Images are
scaled to ``--max-side`` and written as files (the training worker reads them by URI). A private stack runs
Redis, tritonserver (explicit model control, serving the repository the training worker publishes into), the
segmentation, training and selection servers and the training and selection workers.

Per project, every ``--test-every``-th image is a fixed test split that is never annotated; the rest is the
pool. Two arms of the same project: the *strategy* arm (project ``loop-<name>``) picks each round's images by
``SelectBatch`` (``--strategy``, on a fresh pool of its unlabelled images scored by its current task model in
Triton; the first round, with no task model, uniform), the *uniform* arm (``loop-<name>-uniform``) picks
uniformly at random (seeded, in the bench). Both arms start from the same first batch, take the same uniform draw
while the strategy arm has no task model and the same images as the uniform arm, and share the split key
(``TRAINING_SPLIT_KEYS``): the training gate holds out the same images in both. Every image is annotated by
the standard clicker (``services/models/clicker.py``) through a real segmentation session until IoU
``--target`` or ``--max-clicks`` and submitted by ``FinishSession`` (the one AnnotationSubmitted event the
training worker stores). The segmentation server serves a project with its promoted interactive model by
itself (``interactive-<slug>-<hash>`` once READY in Triton); the bench waits until it does after a promotion.
The same images are clicked with the frozen base network on a second segmentation server whose setting names
it for every project (``segmentation_project_models``), finished as abandoned: nothing is submitted. Between rounds,
``StartTraining`` (interactive for the strategy arm, task for both; configs from the options) and the bench
waits on the operation; the gate decides what is promoted.

Per round: NoC@85/90 on that round's images (not yet annotated when clicked) with the promoted and the frozen
model, clicks and simulated seconds per object (``services/simulation/timing.py``), each arm's task-model mIoU
(background and object) on the test split through Triton against annotations spent (no task model yet: the
all-background prediction). ``click_saving_last_round`` = 1 - clicks(promoted) / clicks(frozen) per object on
the last round's images; ``al_gain_points`` = area under mIoU-against-budget (trapezoid, divided by the budget
span, in points), strategy minus uniform. Writes FILE.json and FILE.png beside it.
"""

from __future__ import annotations

import json
import os
import shlex
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from unittest import mock

import cv2
import grpc
import numpy as np
import typer
from PIL import Image
from tqdm import tqdm

from annotation.v1 import (
    common_pb2,
    operations_pb2,
    operations_pb2_grpc,
    segmentation_pb2,
    segmentation_pb2_grpc,
    selection_pb2,
    selection_pb2_grpc,
    training_pb2,
    training_pb2_grpc,
)
from services.common.clicks import THRESHOLD
from services.common.images import encode_png
from services.common.masks import decode_rle, iou
from services.common.settings import Settings as PlatformSettings
from services.models.clicker import Clicker, noc
from services.simulation.timing import QuestionTimer

app = typer.Typer(add_completion=False)
INTERACTIVE, TASK = training_pb2.MODEL_KIND_INTERACTIVE, training_pb2.MODEL_KIND_TASK
BASE_MODEL = PlatformSettings.model_fields["triton_model_name"].default  # the frozen base click network
DONE = (common_pb2.Operation.SUCCEEDED, common_pb2.Operation.FAILED, common_pb2.Operation.CANCELLED)


@dataclass
class Item:
    stem: str
    image: np.ndarray  # (H, W, 3) uint8
    gt: np.ndarray  # (H, W) uint8: 0 / 128 / 255
    uri: str
    png: bytes


@dataclass
class Settings:
    """Defaults sized for about 15 minutes a video project on 2 shared CPU cores: shorter interactive jobs than
    the job's own default (100 iterations, learning rate 2e-4), so a larger step; crops of the base's size."""

    rounds: int = 4
    per_round: int = 8
    max_side: int = 320
    test_every: int = 5
    target: float = 0.90
    max_clicks: int = 20
    strategy: str = "combined"
    interactive_iterations: int = 40
    interactive_crop: int = 0  # 0: the job's default, the base network's own size
    interactive_batch: int = 4
    task_steps: int = 100
    task_size: int = 64
    heldout_percent: int = 25
    seed: int = 0
    interactive_lr: float = 1e-3  # 0: the job's default


def _pairs(data: Path) -> dict[str, list[tuple[Path, Path]]]:
    """Project name -> (image, mask) files of each image/mask folder pair in ``data``."""
    def pairs(images: Path, masks: Path) -> list[tuple[Path, Path]]:
        return [(p, masks / f"{p.stem}.png") for p in sorted(images.iterdir())
                if p.suffix.lower() in (".jpg", ".jpeg", ".png", ".bmp") and (masks / f"{p.stem}.png").exists()]

    if (data / "images").is_dir():
        return {data.name: pairs(data / "images", data / "masks")}
    return {d.name: pairs(d / "frames", d / "masks") for d in sorted(data.iterdir())
            if (d / "frames").is_dir() and (d / "masks").is_dir()}


def load_project(files: list[tuple[Path, Path]], folder: Path, max_side: int) -> list[Item]:
    folder.mkdir(parents=True, exist_ok=True)
    items = []
    for image_path, mask_path in files:
        image = np.asarray(Image.open(image_path).convert("RGB"))
        gt = np.asarray(Image.open(mask_path).convert("L"))
        scale = min(1.0, max_side / max(image.shape[:2]))
        if scale < 1.0:
            size = (round(image.shape[1] * scale), round(image.shape[0] * scale))
            image = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
            gt = cv2.resize(gt, size, interpolation=cv2.INTER_NEAREST)
        png = encode_png(image)
        path = folder / f"{image_path.stem}.png"
        path.write_bytes(png)
        items.append(Item(image_path.stem, image, gt, path.resolve().as_uri(), png))
    return items


class Platform:
    """The stubs of the services the loop talks to, with the admin key."""

    def __init__(self, stack) -> None:
        self.stack, self.meta = stack, stack.auth
        self.seg = {name: segmentation_pb2_grpc.SegmentationStub(stack.channel(name))
                    for name in ("segmentation", "segmentation-frozen")}
        training = stack.channel("training")
        self.training = training_pb2_grpc.TrainingStub(training)
        self.training_ops = operations_pb2_grpc.OperationsStub(training)
        selection = stack.channel("selection")
        self.selection = selection_pb2_grpc.SelectionStub(selection)
        self.selection_ops = operations_pb2_grpc.OperationsStub(selection)

    def wait(self, ops, project: str, op_id: str, timeout_s: float = 3600) -> common_pb2.Operation:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            op = ops.GetOperation(operations_pb2.GetOperationRequest(project_id=project, operation_id=op_id),
                                  metadata=self.meta, timeout=30).operation
            if op.state in DONE:
                return op
            time.sleep(1.0)
        raise TimeoutError(f"operation {op_id} of {project} not done within {timeout_s:.0f} s")

    def current(self, project: str, kind: int) -> training_pb2.ModelVersion | None:
        try:
            return self.training.GetModelVersion(training_pb2.GetModelVersionRequest(project_id=project, kind=kind),
                                                 metadata=self.meta, timeout=30).version
        except grpc.RpcError as exc:
            if exc.code() == grpc.StatusCode.NOT_FOUND:
                return None
            raise


def click_session(platform: Platform, server: str, project: str, item: Item, label: str, settings: Settings,
                  submit: bool) -> dict:
    """The standard clicker through one real session until ``target`` IoU or ``max_clicks``; submitted
    (FinishSession: the annotation event) or abandoned."""
    stub, call = platform.seg[server], {"metadata": platform.meta, "timeout": 120}
    h, w = item.gt.shape
    session = stub.StartSession(segmentation_pb2.StartSessionRequest(
        project_id=project, image_data=item.png, annotator_id="simulated-clicker", label=label,
        task_id=f"loop-{item.stem}", image=common_pb2.ImageRef(image_id=item.stem, uri=item.uri, width=w, height=h)),
        **call).session.session_id
    clicker = Clicker(item.gt)
    curve, pred, version = [], None, ""
    for _ in range(settings.max_clicks):
        click = clicker.next_click(pred)
        if click is None:
            break
        update = stub.AddClick(segmentation_pb2.AddClickRequest(project_id=project, session_id=session,
                                                               click=common_pb2.Click(x=click.x, y=click.y,
                                                                                      positive=click.positive)),
                               **call).update
        pred = decode_rle(update.mask.size, update.mask.counts, (h, w), "mask") > THRESHOLD
        version = update.model_version or version
        curve.append(iou(pred, clicker.gt, clicker.ignore))
        if curve[-1] >= settings.target:
            break
    outcome = common_pb2.SESSION_OUTCOME_SUBMITTED if submit else common_pb2.SESSION_OUTCOME_ABANDONED
    stub.FinishSession(segmentation_pb2.FinishSessionRequest(project_id=project, session_id=session,
                                                             outcome=outcome), **call)
    full = curve + [curve[-1] if curve else 0.0] * (settings.max_clicks - len(curve))
    return {"clicks": list(clicker.clicks), "curve": full, "model_version": version,
            "final_iou": curve[-1] if curve else 0.0}


def _stats(sessions: list[dict], settings: Settings, round_no: int, shape: tuple[int, int]) -> dict:
    if not sessions:
        return {}
    # The n-th object of a round is timed with the same random draws whichever model clicked it.
    seconds = [QuestionTimer(rng=np.random.default_rng([settings.seed, round_no, n])).segment_s(s["clicks"], shape)
               for n, s in enumerate(sessions)]
    return {
        "objects": len(sessions),
        "clicks": [len(s["clicks"]) for s in sessions],
        "clicks_per_object": round(float(np.mean([len(s["clicks"]) for s in sessions])), 3),
        "seconds_per_object": round(float(np.mean(seconds)), 2),
        "noc85": round(float(np.mean([noc(s["curve"], 0.85, settings.max_clicks) for s in sessions])), 3),
        "noc90": round(float(np.mean([noc(s["curve"], 0.90, settings.max_clicks) for s in sessions])), 3),
        "failed90": int(sum(max(s["curve"]) < 0.90 for s in sessions)),
        "mean_final_iou": round(float(np.mean([s["final_iou"] for s in sessions])), 4),
        "model_versions": sorted({s["model_version"] for s in sessions}),
    }


def train(platform: Platform, project: str, kind: int, settings: Settings) -> dict:
    """One StartTraining, waited on; the job's result (state, version) or why it did not run."""
    request = training_pb2.StartTrainingRequest(project_id=project, kind=kind)
    if kind == INTERACTIVE:
        request.interactive.CopyFrom(training_pb2.InteractiveModelConfig(
            iterations=settings.interactive_iterations, crop_size=settings.interactive_crop,
            batch_size=settings.interactive_batch, seed=settings.seed, learning_rate=settings.interactive_lr,
            checkpoint_every=max(1, settings.interactive_iterations // 2)))
    else:
        request.task.CopyFrom(training_pb2.TaskModelConfig(
            steps=settings.task_steps, image_size=settings.task_size, seed=settings.seed,
            checkpoint_every=max(1, settings.task_steps // 2)))
    started = time.perf_counter()
    try:
        op = platform.training.StartTraining(request, metadata=platform.meta, timeout=60).operation
    except grpc.RpcError as exc:
        if exc.code() == grpc.StatusCode.FAILED_PRECONDITION:  # e.g. no held-out image yet
            return {"state": "NOT_STARTED", "reason": exc.details()}
        raise
    op = platform.wait(platform.training_ops, project, op.id)
    result = {"state": dict(op.result).get("state", common_pb2.Operation.State.Name(op.state)),
              "version": int(dict(op.result).get("model_version", 0)),
              "seconds": round(time.perf_counter() - started, 1)}
    if op.state != common_pb2.Operation.SUCCEEDED:
        result["error"] = op.error.message
    return result


def wait_served(platform: Platform, project: str, version: str, item: Item, timeout_s: float = 60) -> float:
    """Seconds until the segmentation server clicks the project's images with ``version`` (it reads Triton's
    READY versions every few seconds); a probe session with one click, abandoned."""
    started = time.monotonic()
    stub, call = platform.seg["segmentation"], {"metadata": platform.meta, "timeout": 60}
    while True:
        session = stub.StartSession(segmentation_pb2.StartSessionRequest(project_id=project, image_data=item.png),
                                    **call).session.session_id
        h, w = item.gt.shape
        served = stub.AddClick(segmentation_pb2.AddClickRequest(project_id=project, session_id=session, click=(
            common_pb2.Click(x=w // 2, y=h // 2, positive=True))), **call).update.model_version
        stub.FinishSession(segmentation_pb2.FinishSessionRequest(
            project_id=project, session_id=session, outcome=common_pb2.SESSION_OUTCOME_ABANDONED), **call)
        if served == version:
            return round(time.monotonic() - started, 1)
        if time.monotonic() - started > timeout_s:
            raise TimeoutError(f"{project} still clicked with {served!r}, not the promoted {version!r}")
        time.sleep(1.0)


def wait_stored(platform: Platform, project: str, count: int, timeout_s: float = 300) -> training_pb2.Snapshot:
    """The project's snapshot once the training worker stored ``count`` annotations of it (a snapshot freezes
    them all)."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            made = platform.training.CreateSnapshot(training_pb2.CreateSnapshotRequest(project_id=project),
                                                    metadata=platform.meta, timeout=30).snapshot
            if made.annotation_count >= count:
                return made
        except grpc.RpcError as exc:
            if exc.code() not in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.FAILED_PRECONDITION):
                raise
        if time.monotonic() > deadline:
            raise TimeoutError(f"training stored fewer than {count} annotations of {project}")
        time.sleep(1.0)


def task_miou(platform: Platform, project: str, test: list[Item]) -> tuple[float, int]:
    """(mIoU over background and object in points, version) of the project's current task model on the test
    images through Triton; the all-background prediction with no task model yet (version 0)."""
    version = platform.current(project, TASK)
    truth = [(i.gt > 128) for i in test]
    valid = [(i.gt != 128) for i in test]
    if version is None:
        preds = [np.zeros_like(t) for t in truth]
    else:
        import tritonclient.grpc as triton

        client = triton.InferenceServerClient(platform.stack.settings.triton_grpc_url)
        preds = []
        for item in test:
            x = item.image.astype(np.float32).transpose(2, 0, 1)[None] / 255.0
            inputs = [triton.InferInput("IMAGE", list(x.shape), "FP32")]
            inputs[0].set_data_from_numpy(x)
            probs = client.infer(version.triton_model_name, inputs, client_timeout=60).as_numpy("PROBABILITIES")[0]
            labels = probs.argmax(0)
            if labels.shape != item.gt.shape:
                labels = cv2.resize(labels.astype(np.uint8), item.gt.shape[::-1], interpolation=cv2.INTER_NEAREST)
            preds.append(labels > 0)
    inter = [sum(int(((p == k) & (t == k) & v).sum()) for p, t, v in zip(preds, truth, valid)) for k in (False, True)]
    union = [sum(int((((p == k) | (t == k)) & v).sum()) for p, t, v in zip(preds, truth, valid)) for k in (False, True)]
    return round(100.0 * float(np.mean([i / max(u, 1) for i, u in zip(inter, union)])), 2), \
        (version.version if version else 0)


def select_strategy(platform: Platform, project: str, round_no: int, unlabelled: list[Item], label: str,
                    budget: int, strategy: str) -> tuple[list[str], str]:
    """The strategy arm's next images: a pool of its unlabelled images this round, scored on demand by its
    current task model (``StartScoring.triton_model``), then SelectBatch."""
    model = platform.current(project, TASK)
    if model is None:
        return [], "no task model"
    pool = f"round-{round_no}"
    platform.selection.CreatePool(selection_pb2.CreatePoolRequest(
        project_id=project, pool_id=pool, class_names=["background", label]), metadata=platform.meta, timeout=30)
    platform.selection.RegisterItems(selection_pb2.RegisterItemsRequest(project_id=project, pool_id=pool, items=[
        selection_pb2.PoolItem(item_id=i.stem, kind=selection_pb2.ITEM_KIND_IMAGE, image=common_pb2.ImageRef(
            image_id=i.stem, uri=i.uri, width=i.gt.shape[1], height=i.gt.shape[0])) for i in unlabelled]),
        metadata=platform.meta, timeout=60)
    op = platform.selection.StartScoring(selection_pb2.StartScoringRequest(
        project_id=project, pool_id=pool, triton_model=model.triton_model_name), metadata=platform.meta,
        timeout=60).operation
    op = platform.wait(platform.selection_ops, project, op.id)
    if op.state != common_pb2.Operation.SUCCEEDED:
        raise RuntimeError(f"scoring {project}/{pool}: {op.error.message}")
    picked = platform.selection.SelectBatch(selection_pb2.SelectBatchRequest(
        project_id=project, pool_id=pool, strategy=strategy, granularity=common_pb2.GRANULARITY_IMAGE,
        budget=budget, budget_unit=selection_pb2.BUDGET_UNIT_REGIONS), metadata=platform.meta, timeout=120)
    return [r.item_id for r in picked.regions], f"{strategy} by task model v{model.version}"


def round_picks(select, pool: list[Item], labelled: dict[str, list[str]], rng: np.random.Generator,
                count: int) -> tuple[dict[str, list[str]], str]:
    """Stems each arm annotates next, and how the strategy arm's were picked. ``select(unlabelled) -> (stems,
    how)`` is the strategy (no stems: no task model yet). Without a task model the strategy is uniform, so
    while both arms have the same images they take the same draw: the comparison starts where the strategy
    first chooses, not at two different draws."""
    def draw(arm: str) -> list[str]:
        unlabelled = [it for it in pool if it.stem not in labelled[arm]]
        return [unlabelled[n].stem for n in sorted(rng.choice(len(unlabelled), count, replace=False))]

    uniform = draw("uniform")
    chosen, how = select([it for it in pool if it.stem not in labelled["strategy"]])
    if not chosen and set(labelled["strategy"]) == set(labelled["uniform"]):
        chosen, how = uniform, "uniform (no task model yet; the uniform arm's draw)"
    elif not chosen:
        chosen, how = draw("strategy"), "uniform (no task model yet)"
    return {"strategy": chosen, "uniform": uniform}, how


def area(budgets: list[int], mious: list[float]) -> float:
    """Trapezoid area under mIoU against budget, divided by the budget span (a mean mIoU in points)."""
    if len(budgets) == 1:
        return mious[0]
    return float(np.trapezoid(mious, budgets) / (budgets[-1] - budgets[0]))


def run_project(platform: Platform, name: str, items: list[Item], settings: Settings, progress) -> dict:
    project, uniform_project, label = f"loop-{name}", f"loop-{name}-uniform", "object"
    rng = np.random.default_rng(settings.seed)
    test = [it for n, it in enumerate(items) if n % settings.test_every == settings.test_every // 2]
    pool = [it for it in items if it not in test]
    by_stem = {it.stem: it for it in pool}
    if len(pool) < settings.rounds * settings.per_round:
        raise typer.BadParameter(f"{name}: {len(pool)} pool images < rounds x per-round", param_hint="--per-round")
    first = [pool[n].stem for n in sorted(rng.choice(len(pool), settings.per_round, replace=False))]
    labelled = {"strategy": [], "uniform": []}
    shape = items[0].gt.shape
    rows = []
    for r in range(settings.rounds):
        started = time.perf_counter()
        row: dict = {"round": r}
        # Pick.
        if r == 0:
            picks = {"strategy": first, "uniform": first}
            row["strategy_pick"] = "uniform (first round)"
        else:
            picks, row["strategy_pick"] = round_picks(
                lambda unl: select_strategy(platform, project, r, unl, label, settings.per_round, settings.strategy),
                pool, labelled, rng, settings.per_round)
        # Annotate: the strategy arm with its promoted interactive model (frozen alongside, not submitted).
        promoted = platform.current(project, INTERACTIVE)
        row["interactive_version"] = promoted.version if promoted else 0
        if promoted is not None:
            row["serving_wait_s"] = wait_served(platform, project, f"{promoted.triton_model_name}:{promoted.version}",
                                                by_stem[picks["strategy"][0]])
        sessions = {"promoted": [], "frozen": []}
        for stem in picks["strategy"]:
            item = by_stem[stem]
            if promoted is not None:
                sessions["promoted"].append(click_session(platform, "segmentation", project, item, label,
                                                          settings, submit=True))
                sessions["frozen"].append(click_session(platform, "segmentation-frozen", project, item, label,
                                                        settings, submit=False))
            else:
                sessions["frozen"].append(click_session(platform, "segmentation", project, item, label, settings,
                                                        submit=True))
                sessions["promoted"].append(sessions["frozen"][-1])
            progress()
        for stem in picks["uniform"]:
            click_session(platform, "segmentation", uniform_project, by_stem[stem], label, settings, submit=True)
            progress()
        for arm in labelled:
            labelled[arm] += picks[arm]
        row["images"] = picks
        row["promoted"] = _stats(sessions["promoted"], settings, r, shape)
        row["frozen"] = _stats(sessions["frozen"], settings, r, shape)
        frozen_clicks, promoted_clicks = row["frozen"]["clicks_per_object"], row["promoted"]["clicks_per_object"]
        row["click_saving"] = round(1 - promoted_clicks / frozen_clicks, 4) if frozen_clicks else 0.0
        row["annotate_s"] = round(time.perf_counter() - started, 1)
        # Train between rounds.
        stored = {arm: wait_stored(platform, p, len(labelled[arm]))
                  for arm, p in (("strategy", project), ("uniform", uniform_project))}
        row["split"] = {arm: {"key": s.split_key, "heldout_images": s.heldout_image_count,
                              "train_images": s.train_image_count} for arm, s in stored.items()}
        row["training"] = {}
        if r < settings.rounds - 1:  # the last round's interactive model would be measured by no round
            row["training"]["interactive"] = train(platform, project, INTERACTIVE, settings)
        row["training"]["task"] = train(platform, project, TASK, settings)
        row["training"]["task_uniform"] = train(platform, uniform_project, TASK, settings)
        row["budget"] = len(labelled["strategy"])
        row["miou_strategy"], row["task_version_strategy"] = task_miou(platform, project, test)
        row["miou_uniform"], row["task_version_uniform"] = task_miou(platform, uniform_project, test)
        row["seconds"] = round(time.perf_counter() - started, 1)
        rows.append(row)
        tqdm.write(f"{name} round {r}: clicks/object promoted {promoted_clicks} (v{row['interactive_version']}) "
                   f"frozen {frozen_clicks}; mIoU {row['miou_strategy']} vs uniform {row['miou_uniform']}; "
                   f"training {json.dumps(row['training'])}")
    budgets = [row["budget"] for row in rows]
    return {
        "project": project, "images": len(items), "pool": len(pool), "test": len(test),
        "image_size": f"{shape[1]}x{shape[0]}",
        "click_saving_last_round": rows[-1]["click_saving"],
        "al_gain_points": round(area(budgets, [row["miou_strategy"] for row in rows])
                                - area(budgets, [row["miou_uniform"] for row in rows]), 2),
        "rounds": rows,
    }


def plot(report: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    projects = report["projects"]
    fig, axes = plt.subplots(len(projects), 2, figsize=(10, 3.6 * len(projects)), dpi=110, squeeze=False)
    for (name, result), (left, right) in zip(projects.items(), axes):
        rows = result["rounds"]
        rounds = [r["round"] for r in rows]
        for key, style in (("promoted", "-o"), ("frozen", "--s")):
            left.plot(rounds, [r[key]["clicks_per_object"] for r in rows], style, label=f"clicks/object, {key}")
            left.plot(rounds, [r[key]["noc85"] for r in rows], style, alpha=0.5, label=f"NoC@85, {key}")
        left.set(xlabel="round", ylabel="clicks", title=f"{name}: saving last round "
                 f"{result['click_saving_last_round']:.0%}", xticks=rounds)
        left.grid(alpha=0.3)
        left.legend(fontsize=7)
        budgets = [r["budget"] for r in rows]
        right.plot(budgets, [r["miou_strategy"] for r in rows], "-o", label=report["settings"]["strategy"])
        right.plot(budgets, [r["miou_uniform"] for r in rows], "--s", label="uniform")
        right.set(xlabel="annotations spent", ylabel="task model mIoU (points)",
                  title=f"{name}: AL gain {result['al_gain_points']:+.1f} points")
        right.grid(alpha=0.3)
        right.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def run(data: Path, out: Path, settings: Settings, sequences: list[str], work: Path | None = None) -> dict:
    found = _pairs(data)
    names = [n for n in found if not sequences or n in sequences]
    if not names:
        raise typer.BadParameter(f"no image/mask folders under {data} (or none named {sequences})",
                                 param_hint="--data")
    # Rounds are started here; the worker's own trigger (every N annotations) would race them. Both arms of a
    # project share its split key: they gate on the same held-out images, not on two draws. The stack's
    # processes inherit the environment: set for this run only (a caller in the same process, a test suite,
    # must not inherit it).
    split_keys = {f"loop-{n}-uniform": f"loop-{n}" for n in names}
    with mock.patch.dict(os.environ, {"ANNOT_TRAINING_TRIGGER_EVERY": "0",
                                      "ANNOT_TRAINING_HELDOUT_PERCENT": str(settings.heldout_percent),
                                      "ANNOT_TRAINING_SPLIT_KEYS": json.dumps(split_keys)}):
        return _run(names, found, data, out, settings, work)


def _run(names: list[str], found: dict, data: Path, out: Path, settings: Settings, work: Path | None) -> dict:
    from services.simulation.stack import LocalStack

    started = time.perf_counter()
    report: dict = {"command": shlex.join([Path(sys.executable).name, "-m", "bench.loop", *sys.argv[1:]]),
                    "data": str(data), "settings": settings.__dict__, "projects": {}, "timings": {}}
    frozen = {f"loop-{n}": BASE_MODEL for n in names}
    with LocalStack(["segmentation", "training", "selection"], workers=["training", "selection"], publish=True,
                    overrides={"segmentation-frozen": {"segmentation_project_models": frozen}}) as stack:
        report["timings"]["stack_up_s"] = round(time.perf_counter() - started, 1)
        platform = Platform(stack)
        folder = work or stack.dir / "images"
        for name in names:
            items = load_project(found[name], folder / name, settings.max_side)
            total = settings.rounds * settings.per_round * 2
            with tqdm(total=total, desc=name, unit="session") as bar:
                t0 = time.perf_counter()
                report["projects"][name] = run_project(platform, name, items, settings, bar.update)
                report["timings"][name] = round(time.perf_counter() - t0, 1)
    results = list(report["projects"].values())
    report["click_saving_last_round"] = round(float(np.mean([r["click_saving_last_round"] for r in results])), 4)
    report["al_gain_points"] = round(float(np.mean([r["al_gain_points"] for r in results])), 2)
    report["timings"]["total_s"] = round(time.perf_counter() - started, 1)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1) + "\n")
    plot(report, out.with_suffix(".png"))
    return report


@app.command()
def main(
    data: Path = typer.Option(..., exists=True, file_okay=False, help="images/ + masks/, or the video layout"),
    out: Path = typer.Option(..., help="results JSON; the plot goes beside it as .png"),
    sequence: list[str] = typer.Option([], help="only these sequences of a video folder; repeatable"),
    rounds: int = typer.Option(Settings.rounds, min=1),
    per_round: int = typer.Option(Settings.per_round, min=1, help="images annotated per round and arm"),
    max_side: int = typer.Option(Settings.max_side, min=32, help="images scaled to this longer side"),
    test_every: int = typer.Option(Settings.test_every, min=2, help="every N-th image is the fixed test split"),
    max_clicks: int = typer.Option(Settings.max_clicks, min=1),
    target: float = typer.Option(Settings.target, min=0.5, max=1.0, help="the annotator stops at this IoU"),
    strategy: str = typer.Option(Settings.strategy, help="the project's selection strategy (ListStrategies)"),
    interactive_iterations: int = typer.Option(Settings.interactive_iterations, min=1),
    interactive_crop: int = typer.Option(Settings.interactive_crop, min=0, max=512,
                                          help="0: the size the base network was trained at"),
    interactive_batch: int = typer.Option(Settings.interactive_batch, min=1, max=64),
    task_steps: int = typer.Option(Settings.task_steps, min=1),
    task_size: int = typer.Option(Settings.task_size, min=16),
    heldout_percent: int = typer.Option(Settings.heldout_percent, min=1, max=99,
                                        help="share of images the training gate holds out"),
    interactive_lr: float = typer.Option(Settings.interactive_lr, min=0.0, max=1.0, help="0: the job's default"),
    seed: int = typer.Option(Settings.seed),
) -> None:
    settings = Settings(rounds=rounds, per_round=per_round, max_side=max_side, test_every=test_every, target=target,
                        max_clicks=max_clicks, strategy=strategy, interactive_iterations=interactive_iterations,
                        interactive_crop=interactive_crop, interactive_batch=interactive_batch, task_steps=task_steps,
                        task_size=task_size, heldout_percent=heldout_percent, seed=seed, interactive_lr=interactive_lr)
    report = run(data, out, settings, sequence)
    typer.echo(f"click_saving_last_round {report['click_saving_last_round']:.3f}  "
               f"al_gain_points {report['al_gain_points']:+.2f}  ({report['timings']['total_s']:.0f} s)")
    typer.echo(f"wrote {out} and {out.with_suffix('.png')}")


if __name__ == "__main__":
    app()
