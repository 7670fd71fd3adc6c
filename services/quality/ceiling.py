"""How far the click-based ranking can go: the training recipe on a quarter, half and all of the
training sessions (a learning curve), on all of them with each session's true annotator profile
appended, and on all of them with what an ImageNet encoder sees of the image and the final mask
(``image_features``), scored on the evaluation sessions, over several seeds.

    python -m services.quality.ceiling --out var/quality/eval/ceiling.json   # 800 COCO-MVal sessions -> 300 GrabCut

The profile (target IoU, speed, perception noise, click budget...) is what the simulated annotator drew
for that session: no deployment knows it. A perfect annotator track record could at best tell it, so the
``true profile`` figure bounds what reputation features could add; the ``encoder's view`` figure is what
reading the image beside the clicks adds (SAM predicts its masks' IoU from its image features). Uses the
session caches of ``services.quality.train`` and ``services.quality.evaluate``, simulating what they lack. Writes
FILE.json and FILE.png (ROC-AUC per variant, mean and range over the seeds, against the best single-feature
baseline and the target).
"""

from __future__ import annotations

import dataclasses
import json
import shlex
import sys
from pathlib import Path

import numpy as np
import typer
from tqdm import tqdm

from services.common.image_files import load_image
from services.models.quality_gru import DEFAULT_THRESHOLD
from services.quality import image_features, summary
from services.quality.evaluate import baselines
from services.quality.metrics import ranking_metrics
from services.quality.train import (
    SESSIONS_DIR,
    TRAIN_DATA,
    evaluate_items,
    featurise,
    fit,
)
from services.simulation.annotator import Profile
from services.simulation.stack import segmentation_fingerprint

PROFILE_FIELDS = tuple(f.name for f in dataclasses.fields(Profile))
TARGET_ROC_AUC = 0.9
Items = list[tuple[np.ndarray, np.ndarray]]  # (steps, session) features per session
app = typer.Typer(add_completion=False)


def with_profile(items: Items, records: list[dict]) -> Items:
    """``items`` with the session's true annotator profile appended to its session features."""
    return [(steps, np.concatenate([session, [float(r["profile"][k]) for k in PROFILE_FIELDS]]).astype(np.float32))
            for (steps, session), r in zip(items, records)]


def with_image(items: Items, records: list[dict], data: Path) -> Items:
    """``items`` with ``image_features`` of the session's image (found in ``data`` by its stem) and final
    mask appended to its session features."""
    out = []
    for (steps, session), r in zip(tqdm(items, desc=f"encoder's view of {data.name}", unit="session"), records):
        path = next((data / "images").glob(f"{r['stem']}.*"))
        view = image_features.extract(load_image(str(path)), summary.validate(r["summary"]))
        out.append((steps, np.concatenate([session, view]).astype(np.float32)))
    return out


def variants(count: int) -> dict[str, tuple[slice, str]]:
    """name -> (which of ``count`` training sessions, what is appended to the session features: nothing,
    the true profile or the encoder's view): a learning curve, the oracle, the image."""
    out = {f"recipe, {len(range(count)[::k])} sessions": (slice(None, None, k), "") for k in (4, 2, 1)}
    out[f"recipe + true profile, {count} sessions"] = (slice(None), "profile")
    out[f"recipe + encoder's view, {count} sessions"] = (slice(None), "image")
    return out


def measure(train: list[dict], test: list[dict], seeds: int, data: Path, eval_data: Path, **fit_args) -> dict:
    """Figures on ``test`` of each variant trained on ``train`` (images of ``data`` and ``eval_data``), one
    row per seed, and the baselines."""
    train_items = featurise([r["summary"] for r in train])
    train_iou = np.asarray([r["true_iou"] for r in train], np.float32)
    test_items = featurise([r["summary"] for r in test])
    test_iou = np.asarray([r["true_iou"] for r in test], np.float32)
    rows: dict[str, list[dict]] = {}
    for name, (part, extra) in variants(len(train)).items():
        items, scored = train_items[part], test_items
        if extra == "profile":
            items, scored = with_profile(items, train[part]), with_profile(test_items, test)
        elif extra == "image":
            items, scored = with_image(items, train[part], data), with_image(test_items, test, eval_data)
        rows[name] = [evaluate_items(fit(items, train_iou[part], seed=seed, **fit_args), scored, test_iou)
                      for seed in range(seeds)]
        typer.echo(f"{name}: ROC-AUC per seed " + " ".join(str(r["roc_auc"]) for r in rows[name]))
    return {"variants": {name: {"per_seed": r, "roc_auc_mean": _mean(r, "roc_auc"),
                                "spearman_mean": _mean(r, "spearman")} for name, r in rows.items()},
            "baselines": {name: ranking_metrics(q, test_iou, DEFAULT_THRESHOLD)
                          for name, q in baselines(test_items).items()}}


def _mean(rows: list[dict], key: str) -> float | None:
    values = [r[key] for r in rows if r[key] is not None]  # None: undefined for a constant score
    return round(float(np.mean(values)), 4) if values else None


def plot(report: dict, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(report["variants"])
    fig, ax = plt.subplots(figsize=(6.8, 0.6 * len(names) + 1.6), dpi=120)
    for i, name in enumerate(names):
        aucs = [r["roc_auc"] for r in report["variants"][name]["per_seed"] if r["roc_auc"] is not None]
        if aucs:  # none when the evaluation sessions are all good or all bad
            ax.barh(i, np.mean(aucs), color="tab:blue", alpha=0.7)
            ax.plot([min(aucs), max(aucs)], [i, i], color="black", lw=1.5)  # range over the seeds
    best = max(report["baselines"].items(), key=lambda kv: kv[1]["roc_auc"] or 0)
    if best[1]["roc_auc"] is not None:
        ax.axvline(best[1]["roc_auc"], color="grey", ls=":",
                   label=f"best baseline ({best[0]}) {best[1]['roc_auc']:.3f}")
    ax.axvline(TARGET_ROC_AUC, color="tab:red", ls="--", label=f"target {TARGET_ROC_AUC}")
    ax.set_yticks(range(len(names)), names, fontsize=8)
    ax.set(xlim=(0.5, 1.0), xlabel=f"ROC-AUC for IoU < {DEFAULT_THRESHOLD} (bar: mean, line: range over seeds)",
           title=title)
    ax.legend(loc="lower right", fontsize=7)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


@app.command()
def main(
    out: Path = typer.Option(..., help="results JSON; the bar plot goes beside it as .png"),
    data: Path = typer.Option(TRAIN_DATA, exists=True, file_okay=False, help="training images"),
    limit: int = typer.Option(800, min=1, help="training images spread over --data"),
    repeats: int = typer.Option(1, min=1, help="simulated training sessions per image"),
    eval_data: Path = typer.Option(Path("../shared/data/grabcut"), exists=True, file_okay=False),
    eval_repeats: int = typer.Option(6, min=1, help="simulated sessions per evaluation image"),
    sessions_dir: Path = typer.Option(None, help="session caches, <DIR name>.jsonl each (default "
                                      "var/quality/sessions/<model fingerprint>, shared with train and evaluate)"),
    seeds: int = typer.Option(3, min=1, help="trainings per variant (different seeds)"),
    members: int = typer.Option(5, min=1), epochs: int = typer.Option(60, min=1),
) -> None:
    from services.quality.simulate import simulate_folder

    folder = sessions_dir or SESSIONS_DIR / segmentation_fingerprint()
    # sessions missing from the caches are simulated first, on one private stack each
    train = simulate_folder(data, folder / f"{data.name}.jsonl", limit, repeats)
    test = simulate_folder(eval_data, folder / f"{eval_data.name}.jsonl", 0, eval_repeats)
    report = measure(train, test, seeds, data, eval_data, members=members, epochs=epochs)
    result = {"command": "python -m services.quality.ceiling " + shlex.join(sys.argv[1:]),
              "train_data": str(data), "train_count": len(train), "eval_data": str(eval_data),
              "eval_count": len(test), "threshold": DEFAULT_THRESHOLD, "profile_fields": list(PROFILE_FIELDS),
              "image_features": list(image_features.FEATURES),
              **report}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")
    plot(report, out.with_suffix(".png"), f"{eval_data.name}: {len(test)} sessions, {seeds} seeds per variant")
    typer.echo(f"wrote {out} and {out.with_suffix('.png')}")


if __name__ == "__main__":
    app()
