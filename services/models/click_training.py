"""Train the click-conditioned network with RITM-style iterative click simulation.

    python -m services.models.click_training --data ../shared/data/train/coco_mval --out var/train/run \
        --minutes 150 [--arch effnet_lite0] [--resume]

Each batch: augmented crops; initial clicks sampled from the mask; then 0..N corrective clicks from the
standard clicker on the model's own prediction, with that prediction fed back as the previous mask;
the loss is taken on the last step only. ``--arch effnet_lite0`` trains the network on the ImageNet
encoder (its encoder at ``--encoder-lr-mult`` times the learning rate). Augmentation: scale, shift,
flip, colour, blur, boundary close-ups (the focus pass's view) and copy-paste of objects onto other
images (``click_dataset.augmented_crop``). A held-out split of the training folder selects the best
weights (NoC@90 on it, full zoom-in inference at the original resolution).
"""

from __future__ import annotations

import functools
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
import typer
from scipy import ndimage
from tqdm import tqdm

from services.common.clicks import Click
from services.models import click_pipeline
from services.models.click_dataset import augmented_crop, load_folder, split_stems
from services.models.click_encoding import encode
from services.models.click_models import ARCHES, build, is_pipeline
from services.models.click_predictor import Predictor
from services.models.clicker import Clicker, evaluate

app = typer.Typer(add_completion=False)


def initial_clicks(clicker: Clicker, rng: np.random.Generator) -> None:
    """First positive click (the clicker's own, or a random interior point), sometimes a few more."""
    gt = clicker.gt & ~clicker.ignore
    if not gt.any():
        clicker.next_click(np.zeros_like(gt))
        return
    dist = ndimage.distance_transform_edt(np.pad(gt, 1))[1:-1, 1:-1]
    if rng.random() < 0.5:
        clicker.next_click(np.zeros_like(gt))
    else:
        ys, xs = np.nonzero(dist >= 0.3 * dist.max())
        i = rng.integers(len(ys))
        clicker.add(Click(int(xs[i]), int(ys[i]), True))
    if rng.random() < 0.25:
        ys, xs = np.nonzero(dist >= 0.2 * dist.max())
        for i in rng.integers(len(ys), size=rng.integers(1, 3)):
            clicker.add(Click(int(xs[i]), int(ys[i]), True))
    if rng.random() < 0.25:
        near = ndimage.binary_dilation(gt, iterations=20) & ~gt & ~clicker.ignore
        ys, xs = np.nonzero(near)
        if len(ys):
            for i in rng.integers(len(ys), size=rng.integers(1, 3)):
                clicker.add(Click(int(xs[i]), int(ys[i]), False))


def batch_inputs(images, clickers, prevs, radius, with_prior, channels_last=False) -> torch.Tensor:
    batch = torch.from_numpy(np.stack([
        encode(img, c.clicks, p, radius, with_prior, ~c.ignore)
        for img, c, p in zip(images, clickers, prevs)
    ]))
    return batch.contiguous(memory_format=torch.channels_last) if channels_last else batch


def segmentation_loss(logits: torch.Tensor, gt: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    bce = F.binary_cross_entropy_with_logits(logits, gt, reduction="none")
    bce = (bce * valid).sum() / valid.sum().clamp(min=1)
    prob = torch.sigmoid(logits) * valid
    inter = (prob * gt).sum((1, 2, 3))
    union = (prob + gt * valid - prob * gt).sum((1, 2, 3))
    return bce + (1 - (inter + 1) / (union + 1)).mean()


def train_step(model, opt, samples, cfg, rng) -> float:
    crops = [augmented_crop(samples, int(i), cfg["size"], rng, cfg["focus_p"], cfg["paste_p"], cfg["occlude_p"])
             for i in rng.integers(len(samples), size=cfg["batch"])]
    images = [c[0] for c in crops]
    clickers = [Clicker(gt, ign) for _, gt, ign in crops]
    for clicker in clickers:
        initial_clicks(clicker, rng)
    prevs: list = [None] * len(crops)
    for _ in range(rng.integers(0, cfg["max_steps"] + 1)):
        with torch.no_grad():
            probs = torch.sigmoid(model(batch_inputs(images, clickers, prevs, cfg["radius"], cfg["prior"],
                                                     cfg.get("channels_last", False))))
        prevs = [p[0].numpy() for p in probs]
        for clicker, prev in zip(clickers, prevs):
            clicker.next_click(prev > 0.49)
    logits = model(batch_inputs(images, clickers, prevs, cfg["radius"], cfg["prior"], cfg.get("channels_last", False)))
    gt = torch.from_numpy(np.stack([c.gt for c in clickers])[:, None].astype(np.float32))
    valid = torch.from_numpy(~np.stack([c.ignore for c in clickers])[:, None]).float()
    loss = segmentation_loss(logits, gt, valid)
    opt.zero_grad()
    loss.backward()
    opt.step()
    return float(loss.detach())


def validate(model, cfg, val_samples) -> dict:
    """NoC on the held-out split, one image at a time, with what serving runs around the network:
    the old network alone (no GrabCut refinement), the pretrained one through its whole per-click
    pipeline (zoom-in and focus pass, ``click_pipeline``).

    One thread: batch-1 inference with several OpenMP threads crawls when the cores are shared.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    model.eval()
    if not is_pipeline(cfg):
        segmenter = Predictor.from_model(model, cfg).segmenter
    else:
        pipeline = click_pipeline.from_config(model, cfg)
        segmenter = functools.partial(click_pipeline.segmenter, pipeline)
    _, summary = evaluate(segmenter, val_samples, max_clicks=20, stop_at=0.9)
    model.train()
    torch.set_num_threads(threads)
    return summary


@app.command()
def main(
    data: Path = typer.Option(..., help="folder with images/ and masks/"),
    out: Path = typer.Option(..., help="checkpoints, log and figures go here"),
    minutes: float = typer.Option(150.0, help="training wall-clock budget, summed over resumes"),
    resume: bool = typer.Option(False, help="continue from OUT/last.pt"),
    arch: str = typer.Option("click_net", help=f"network: {' or '.join(ARCHES)}"),
    size: int = 192,
    batch: int = 12,
    max_steps: int = 3,
    lr: float = 2e-3,
    encoder_lr_mult: float = typer.Option(0.1, help="learning-rate factor of a pretrained encoder"),
    warmup_iterations: int = typer.Option(0, help="linear learning-rate warm-up (a fresh decoder on a "
                                          "pretrained encoder)"),
    prior: bool = typer.Option(True, help="add the colour-prior input channel (click_net only)"),
    width: int = 1,
    focus_p: float = typer.Option(0.15, help="share of boundary close-up crops"),
    paste_p: float = typer.Option(0.25, help="share of crops whose object is pasted onto another image"),
    occlude_p: float = typer.Option(0.15, help="share of crops with another object pasted over the target"),
    val_count: int = 60,
    val_minutes: float = 10.0,
    checkpoint_minutes: float = 5.0,
    threads: int = 2,
    seed: int = 0,
) -> None:
    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    out.mkdir(parents=True, exist_ok=True)
    if arch not in ARCHES:
        raise typer.BadParameter(f"unknown network {arch!r}; known: {', '.join(ARCHES)}", param_hint="--arch")
    prior = prior and arch == "click_net"  # the pretrained network takes RGB, clicks and mask only
    cfg = {"arch": arch, "size": size, "batch": batch, "max_steps": max_steps, "radius": 5, "prior": prior,
           "in_channels": 7 if prior else 6, "width": width, "lr": lr, "encoder_lr_mult": encoder_lr_mult,
           "focus_p": focus_p, "paste_p": paste_p, "occlude_p": occlude_p, "seed": seed,
           # depthwise convolutions train about 2x faster on CPU in NHWC (measured on this machine)
           "channels_last": arch != "click_net"}
    model = build(cfg)
    if cfg["channels_last"]:
        model = model.to(memory_format=torch.channels_last)
    if hasattr(model, "encoder_parameters"):
        groups = [{"params": model.encoder_parameters(), "base_lr": lr * encoder_lr_mult},
                  {"params": model.decoder_parameters(), "base_lr": lr}]
    else:
        groups = [{"params": list(model.parameters()), "base_lr": lr}]
    opt = torch.optim.AdamW(groups, lr=lr, weight_decay=1e-4)
    state = {"iteration": 0, "elapsed_s": 0.0, "best": None, "history": []}
    rng = np.random.default_rng(seed)
    if resume and (out / "last.pt").exists():
        saved = torch.load(out / "last.pt", map_location="cpu", weights_only=False)
        model.load_state_dict(saved["model"])
        opt.load_state_dict(saved["optimizer"])
        for group in opt.param_groups:  # checkpoints from before the per-group learning rates
            group.setdefault("base_lr", lr)
        state = saved["state"]
        rng.bit_generator.state = saved["rng"]
        torch.set_rng_state(saved["torch_rng"])
    train_stems, val_stems = split_stems(data, val_count, seed)
    train_samples, val_samples = load_folder(data, train_stems), load_folder(data, val_stems)
    budget = minutes * 60

    def save(name: str) -> None:
        torch.save({"model": model.state_dict(), "optimizer": opt.state_dict(), "config": cfg,
                    "state": state, "rng": rng.bit_generator.state, "torch_rng": torch.get_rng_state()},
                   out / name)

    def write_figures() -> None:
        figures = {"command": " ".join(sys.argv), "config": cfg, "iterations": state["iteration"],
                   "wall_time_s": round(state["elapsed_s"]), "train_images": len(train_samples),
                   "val_images": len(val_samples), "val_stems": val_stems, "best": state["best"],
                   "history": state["history"]}
        (out / "figures.json").write_text(json.dumps(figures, indent=1))

    model.train()
    start, last_ckpt = time.time() - state["elapsed_s"], time.time()
    last_val = state["history"][-1]["elapsed_s"] if state["history"] else 0.0
    bar = tqdm(total=int(budget), initial=int(state["elapsed_s"]), unit="s", desc="train")
    losses: list[float] = []
    while state["elapsed_s"] < budget:
        decay = 0.5 * (1 + math.cos(math.pi * min(1.0, state["elapsed_s"] / budget)))  # over the time budget
        warmup = min(1.0, (state["iteration"] + 1) / warmup_iterations) if warmup_iterations else 1.0
        for group in opt.param_groups:
            group["lr"] = group["base_lr"] * decay * warmup
        losses.append(train_step(model, opt, train_samples, cfg, rng))
        state["iteration"] += 1
        state["elapsed_s"] = time.time() - start
        bar.update(int(state["elapsed_s"]) - bar.n)
        bar.set_postfix(it=state["iteration"], loss=f"{np.mean(losses[-50:]):.3f}")
        done = state["elapsed_s"] >= budget
        if done or state["elapsed_s"] - last_val >= val_minutes * 60:
            summary = validate(model, cfg, val_samples)
            last_val = state["elapsed_s"]
            entry = {"iteration": state["iteration"], "elapsed_s": round(state["elapsed_s"]),
                     "loss": round(float(np.mean(losses[-50:])), 4), "noc85": summary["noc85"],
                     "noc90": summary["noc90"], "failed90": summary["failed90"],
                     "miou_at_1_3_5": [summary["miou_at"][i] for i in (0, 2, 4)]}
            state["history"].append(entry)
            tqdm.write(json.dumps(entry))
            best = state["best"]
            if best is None or (summary["noc90"], summary["noc85"]) < (best["noc90"], best["noc85"]):
                state["best"] = {**summary, "iteration": state["iteration"],
                                 "elapsed_s": round(state["elapsed_s"])}
                torch.save({"model": model.state_dict(), "config": cfg}, out / "best.pt")
            write_figures()
        if done or time.time() - last_ckpt >= checkpoint_minutes * 60:
            save("last.pt")
            last_ckpt = time.time()
    bar.close()
    write_figures()


if __name__ == "__main__":
    app()
