"""The project's task model: semantic segmentation over the project's labels, trained on a snapshot.

The network is the selection task-model contract's (``services/models/task_net.TinySegNet``: logits over
``background`` + the snapshot's labels, spatial dropout for MC-dropout members, an embedding output), so a
promoted version serves selection through Triton exactly like the example task model. Plain code: no
grpc, no celery; progress is a callback.

- ``build_dataset``: a snapshot split's images (read by URI) and per-pixel class targets (each image's
  annotations painted in submit order), resized to ``image_size`` squared. Pseudo-labels are trained on,
  never evaluated on.
- ``train``: Adam on cross-entropy + soft Dice (progress every 1% of the steps, at least once a second); every step's batch, flips and dropout masks come from a
  seed of (config seed, step), and a checkpoint (weights, optimiser, step) is written atomically every
  ``checkpoint_every`` steps, so a job resumed after its worker died continues where it stopped and ends
  with the same weights as one that never stopped.
- ``evaluate`` / ``prior_figures``: mIoU (dataset-level IoU per class, averaged over the classes present)
  on the held-out split, for a network or for the base model (no task model: the training split's
  per-pixel majority class).
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
from torch.nn import functional as F

from services.common.image_files import load_image
from services.common.masks import decode_rle
from services.models.task_net import TinySegNet
from services.training.snapshots import Entry
from services.training.task_config import TaskConfig

Progress = Callable[[int, int, str], None]


@dataclass
class Dataset:
    images: np.ndarray  # [N, 3, S, S] float32 in [0, 1]
    targets: np.ndarray  # [N, S, S] int64 class indices
    image_ids: list[str]
    unreadable: list[str]  # images whose pixels could not be read (or differ from the annotated size)


def build_dataset(entries: list[Entry], class_names: list[str], size: int, heldout: bool,
                  load: Callable[[str], np.ndarray | None] = load_image) -> Dataset:
    """The images of one split with their class maps; ``entries`` in paint order."""
    index = {name: n for n, name in enumerate(class_names)}
    by_image: dict[str, list[Entry]] = {}
    for e in entries:
        if e.heldout == heldout and not (heldout and e.pseudo_label):
            by_image.setdefault(e.image_id, []).append(e)
    images, targets, ids, unreadable = [], [], [], []
    for image_id in sorted(by_image):
        group = by_image[image_id]
        first = group[0]
        pixels = load(first.uri)
        if pixels is None or pixels.shape[:2] != (first.height, first.width):
            unreadable.append(image_id)
            continue
        target = np.zeros((first.height, first.width), np.int64)
        for e in group:
            mask = decode_rle([e.height, e.width], e.mask_counts, (first.height, first.width),
                              f"snapshot entry {e.annotation_id} mask")
            target[mask] = index.get(e.label, 0)
        images.append(cv2.resize(pixels, (size, size), interpolation=cv2.INTER_AREA).transpose(2, 0, 1))
        targets.append(cv2.resize(target.astype(np.int32), (size, size), interpolation=cv2.INTER_NEAREST))
        ids.append(image_id)
    if not images:
        return Dataset(np.zeros((0, 3, size, size), np.float32), np.zeros((0, size, size), np.int64), [], unreadable)
    return Dataset(np.stack(images).astype(np.float32) / 255.0, np.stack(targets).astype(np.int64), ids, unreadable)


def _save_atomically(state: dict, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=path.parent, prefix=f".{path.name}.", delete=False) as tmp:
        torch.save(state, tmp)
    os.replace(tmp.name, path)


def _dice_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    probs = torch.softmax(logits, dim=1)
    onehot = F.one_hot(target, logits.shape[1]).permute(0, 3, 1, 2).float()
    inter = (probs * onehot).sum(dim=(0, 2, 3))
    total = probs.sum(dim=(0, 2, 3)) + onehot.sum(dim=(0, 2, 3))
    return 1 - ((2 * inter + 1) / (total + 1)).mean()


def train(data: Dataset, classes: int, config: TaskConfig, checkpoint: Path | None = None,
          progress: Progress = lambda done, total, message: None) -> TinySegNet:
    """The trained network (eval mode); resumes from ``checkpoint`` when it holds this configuration's state."""
    if len(data.images) == 0:
        raise ValueError("no training images")
    torch.manual_seed(config.seed)
    net = TinySegNet(config.width, classes)
    optimiser = torch.optim.Adam(net.parameters(), lr=config.learning_rate)
    start = 0
    fingerprint = {"config": asdict(config), "classes": classes, "images": len(data.images)}
    if checkpoint is not None and checkpoint.is_file():
        state = torch.load(checkpoint, map_location="cpu", weights_only=True)
        if state.get("fingerprint") == fingerprint:
            net.load_state_dict(state["model"])
            optimiser.load_state_dict(state["optimizer"])
            start = int(state["step"])
            progress(start, config.steps, f"resumed at step {start}/{config.steps} from the checkpoint")
    x, y = torch.from_numpy(data.images), torch.from_numpy(data.targets)
    every, reported = max(1, config.steps // 100), time.monotonic()
    for step in range(start, config.steps):
        seed = config.seed * 1_000_003 + step
        generator = torch.Generator().manual_seed(seed)
        pick = torch.randint(len(x), (config.batch_size,), generator=generator)
        xb, yb = x[pick].clone(), y[pick].clone()
        flip = torch.rand(config.batch_size, generator=generator) < 0.5
        xb[flip], yb[flip] = xb[flip].flip(-1), yb[flip].flip(-1)
        torch.manual_seed(seed)  # the dropout masks
        net.train()
        logits, _ = net(xb)
        loss = F.cross_entropy(logits, yb) + _dice_loss(logits, yb)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        done = step + 1
        if checkpoint is not None and (done % config.checkpoint_every == 0 or done == config.steps):
            _save_atomically({"model": net.state_dict(), "optimizer": optimiser.state_dict(), "step": done,
                              "fingerprint": fingerprint}, checkpoint)
        if done % every == 0 or done == config.steps or time.monotonic() - reported >= 1.0:
            reported = time.monotonic()
            progress(done, config.steps, f"step {done}/{config.steps}, loss {loss.item():.3f}")
    return net.eval()


def load_network(weights: Path, width: int, classes: int) -> TinySegNet:
    net = TinySegNet(width, classes)
    net.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
    return net.eval()


def save_weights(net: TinySegNet, path: Path, scripted: Path | None = None) -> None:
    """The state dict at ``path`` and, when ``scripted`` is given, the network as TorchScript there (written
    first: a weights file means both are complete)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if scripted is not None:
        staging = scripted.with_name(f".{scripted.name}.tmp")
        torch.jit.script(net.eval()).save(str(staging))
        os.replace(staging, scripted)
    _save_atomically(net.state_dict(), path)


def predict(net: TinySegNet, images: np.ndarray, batch: int = 32) -> np.ndarray:
    """Arg-max class per pixel [N, S, S] (eval mode: no dropout)."""
    net.eval()
    out = []
    with torch.no_grad():
        for begin in range(0, len(images), batch):
            logits, _ = net(torch.from_numpy(images[begin:begin + batch]))
            out.append(logits.argmax(dim=1).numpy())
    return np.concatenate(out) if out else np.zeros((0, *images.shape[2:]), np.int64)


def figures(predicted: np.ndarray, targets: np.ndarray, class_names: list[str]) -> dict[str, float]:
    """``miou`` over the classes present in targets or predictions, ``iou/<class>`` each, ``heldout_images``."""
    out: dict[str, float] = {"heldout_images": float(len(targets))}
    ious = []
    for k, name in enumerate(class_names):
        p, t = predicted == k, targets == k
        union = int(np.count_nonzero(p | t))
        if union == 0:
            continue
        iou = np.count_nonzero(p & t) / union
        out[f"iou/{name}"] = float(iou)
        ious.append(iou)
    out["miou"] = float(np.mean(ious)) if ious else 0.0
    return out


def evaluate(net: TinySegNet, net_class_names: list[str], data: Dataset, class_names: list[str]) -> dict[str, float]:
    """Figures of a network whose outputs are ``net_class_names`` on ``data`` labelled in ``class_names``
    (a class the network lacks is never predicted right)."""
    index = {name: n for n, name in enumerate(class_names)}
    mapping = np.array([index.get(name, -1) for name in net_class_names])
    return figures(mapping[predict(net, data.images)], data.targets, class_names)


def prior_figures(train_data: Dataset, heldout: Dataset, class_names: list[str]) -> dict[str, float]:
    """The base model's figures: no task model, so the best guess without the image (each pixel's most
    frequent class in the training split)."""
    counts = np.stack([(train_data.targets == k).sum(axis=0) for k in range(len(class_names))])
    prior = counts.argmax(axis=0)
    return figures(np.broadcast_to(prior, heldout.targets.shape), heldout.targets, class_names)
