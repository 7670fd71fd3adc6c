"""Fits the pretrained priors of the acceptance and click-count models (``pretrained.py``) on outcomes
measured through the real segmentation service on training images, and reports their 5-fold
cross-validated figures (folds by image).

    python -m services.dialog.pretrain --data ../shared/data/train/coco_mval --limit 60

Every outcome holds every action's result (each proposal's IoU, the clicker's run from scratch and
from each proposal), so the rows are unbiased: verification answers for every proposal, click counts
for every start.
"""

from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import typer

from services.dialog.acceptance import FEATURES as ACCEPTANCE_FEATURES
from services.dialog.acceptance import PRIOR_RATE
from services.dialog.cost_model import CLICK_FEATURES, CORRECTION_CLICKS, SCRATCH_CLICKS
from services.dialog.outcomes import Outcome
from services.dialog.pretrained import PRIORS_PATH
from services.dialog.regression import Linear, fit_logistic, fit_ridge, sigmoid
from services.dialog.replay import candidate_of

app = typer.Typer(add_completion=False)
L2, STRENGTH = 2.0, 2.0


def rows_of(outcomes: list[Outcome], target: float, max_clicks: int) -> dict[str, list[tuple[int, dict, float]]]:
    """(image index, features, y) per model: acceptance (1 when the proposal passes), clicks from
    scratch (features of the first proposal, as the policy prices it) and clicks from each proposal."""
    rows: dict[str, list] = {"acceptance": [], "clicks:scratch": [], "clicks:proposal": []}
    for index, outcome in enumerate(outcomes):
        candidate = candidate_of(outcome)
        scratch = outcome.scratch.clicks_to(target, max_clicks)
        rows["clicks:scratch"].append((index, candidate.proposal_features(0),
                                       float(max_clicks if scratch is None else scratch)))
        for i, proposal in enumerate(outcome.proposals):
            features = candidate.proposal_features(i)
            rows["acceptance"].append((index, features, float(proposal.iou >= target)))
            corrected = proposal.correction.clicks_to(target, max_clicks)
            rows["clicks:proposal"].append((index, features, float(max_clicks if corrected is None else corrected)))
    return rows


def fit(key: str, rows: list[tuple[int, dict, float]]) -> Linear:
    features = [r[1] for r in rows]
    y = [r[2] for r in rows]
    if key == "acceptance":
        rate = (sum(y) + PRIOR_RATE * 2) / (len(y) + 2)
        return fit_logistic(ACCEPTANCE_FEATURES, features, [bool(v) for v in y], math.log(rate / (1 - rate)), L2)
    prior = SCRATCH_CLICKS if key == "clicks:scratch" else CORRECTION_CLICKS
    return fit_ridge(CLICK_FEATURES, features, y, prior, STRENGTH)


def cross_validate(key: str, rows: list[tuple[int, dict, float]], images: int, folds: int = 5,
                   seed: int = 0) -> dict:
    """Held-out figures with folds by image: ROC-AUC for acceptance, mean absolute error (clicks)
    for the click models beside that of predicting the training mean."""
    fold_of = np.random.default_rng(seed).permutation(images) % folds
    predicted, truth, mean_baseline = [], [], []
    for k in range(folds):
        train = [r for r in rows if fold_of[r[0]] != k]
        test = [r for r in rows if fold_of[r[0]] == k]
        if not train or not test:
            continue
        model = fit(key, train)
        mean = float(np.mean([r[2] for r in train]))
        for _, features, y in test:
            value = model.predict(features)
            predicted.append(sigmoid(value) if key == "acceptance" else value)
            truth.append(y)
            mean_baseline.append(mean)
    truth_a, pred_a = np.asarray(truth), np.asarray(predicted)
    if key == "acceptance":
        from sklearn.metrics import roc_auc_score  # noqa: PLC0415

        auc = roc_auc_score(truth_a, pred_a) if 0 < truth_a.mean() < 1 else None
        return {"rows": len(truth), "accept_rate": round(float(truth_a.mean()), 4),
                "roc_auc": None if auc is None else round(float(auc), 4)}
    return {"rows": len(truth), "mae": round(float(np.abs(pred_a - truth_a).mean()), 3),
            "mae_of_mean": round(float(np.abs(np.asarray(mean_baseline) - truth_a).mean()), 3)}


@app.command()
def main(
    data: Path = typer.Option(Path("../shared/data/train/coco_mval"), exists=True, file_okay=False,
                              help="training images/ and masks/ (never the evaluation set)"),
    limit: int = typer.Option(60, min=1, help="first N images of --data"),
    iou_target: float = typer.Option(0.85, min=0.05, max=1.0),
    max_clicks: int = typer.Option(20, min=1, max=100),
    cache: Path = typer.Option(None, help="outcome cache (default as services.dialog.simulate's)"),
    out: Path = typer.Option(PRIORS_PATH, help="priors JSON the dialog service reads"),
) -> None:
    from services.dialog.simulate import collect, default_cache  # noqa: PLC0415

    started = time.perf_counter()
    outcomes = collect(data, cache or default_cache(data, iou_target, max_clicks), limit, iou_target, max_clicks)
    rows = rows_of(outcomes, iou_target, max_clicks)
    report = {
        "command": "python -m services.dialog.pretrain " + " ".join(sys.argv[1:]),
        "data": str(data), "images": len(outcomes), "iou_target": iou_target, "max_clicks": max_clicks,
        "fit": {"l2": L2, "strength": STRENGTH},
        "cross_validation": {key: cross_validate(key, r, len(outcomes)) for key, r in rows.items()},
        "models": {key: fit(key, r).to_dict() for key, r in rows.items()},
        "seconds": round(time.perf_counter() - started, 1),
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1) + "\n")
    for key, figures in report["cross_validation"].items():
        typer.echo(f"{key:16s} {figures}")
    typer.echo(f"wrote {out}")


if __name__ == "__main__":
    app()
