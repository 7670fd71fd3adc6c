"""Trains the quality model on simulated sessions (and logged ones with a known outcome).

    python -m services.quality.train                       # simulates (cached) then trains, writes weights
    python -m services.quality.train --folds 5 --no-save   # cross-validated figures on the training set

Sessions come from ``--sessions`` (the JSONL cache of ``services.quality.simulate``); when it lacks some
of the ``--repeats`` sessions on each of ``--limit`` images (spread over ``--data``), those are simulated first through the real
segmentation service (a private stack). With ``--database-url``, reviewed sessions with a corrected mask
(true IoU known, see Quality.RecordReview) are added. Writes ``services/quality/weights/click_gru.pt`` and
its card ``click_gru.json`` (command, data, figures). Retrain whenever the segmentation model changes.
"""

from __future__ import annotations

import json
import shlex
import sys
import time
from pathlib import Path

import numpy as np
import torch
import typer

from services.models.quality_gru import (
    DEFAULT_THRESHOLD,
    THRESHOLDS,
    Ensemble,
)
from services.models.quality_training import fit
from services.quality import features, summary
from services.quality.metrics import ranking_metrics
from services.quality.scorer import MODEL_NAME, WEIGHTS
from services.simulation.stack import segmentation_fingerprint

TRAIN_DATA = Path("../shared/data/train/coco_mval")
SESSIONS_DIR = Path("var/quality/sessions")
app = typer.Typer(add_completion=False)


def featurise(summaries: list[dict]) -> list[tuple[np.ndarray, np.ndarray]]:
    items = []
    for s in summaries:
        mask = summary.validate(s)
        items.append(features.extract(s, mask))
    return items


def evaluate_items(ensemble: Ensemble, items, ious: np.ndarray, threshold: float = DEFAULT_THRESHOLD) -> dict:
    out = ensemble.predict(items)
    head = 1 + THRESHOLDS.index(threshold)
    return ranking_metrics(out[:, 0], ious, threshold, badness=out[:, head])


def cross_validate(items, ious: np.ndarray, groups: list[str], folds: int, **fit_args) -> dict:
    """Figures of models trained without the held-out fold (folds by image, all sessions of one together)."""
    names = sorted(set(groups))
    fold_of = {g: i % folds for i, g in enumerate(np.random.default_rng(0).permutation(names))}
    preds = np.zeros((len(items), 1 + len(THRESHOLDS)))
    for k in range(folds):
        test = np.asarray([fold_of[g] == k for g in groups])
        model = fit([items[i] for i in np.flatnonzero(~test)], ious[~test], **fit_args)
        preds[test] = model.predict([items[i] for i in np.flatnonzero(test)])
    head = 1 + THRESHOLDS.index(DEFAULT_THRESHOLD)
    return ranking_metrics(preds[:, 0], ious, DEFAULT_THRESHOLD, badness=preds[:, head])


def logged_sessions(database_url: str) -> list[tuple[dict, float]]:
    from services.common.storage import make_engine, make_session_factory
    from services.quality.store import QualityStore

    return QualityStore(make_session_factory(make_engine(database_url))).labelled_sessions()


@app.command()
def main(
    sessions: Path = typer.Option(None, help="JSONL cache of simulated sessions (default "
                                  "var/quality/sessions/<model fingerprint>/coco_mval.jsonl)"),
    data: Path = typer.Option(TRAIN_DATA, help="training images (simulated when the cache is short)"),
    limit: int = typer.Option(240, min=1, help="images of --data to simulate on (spread over the folder)"),
    repeats: int = typer.Option(1, min=1, help="simulated sessions per image (different annotators)"),
    simulate: bool = typer.Option(True, help="simulate the sessions missing from the cache (else skip them)"),
    database_url: str = typer.Option("", help="also train on reviewed sessions with a corrected mask here"),
    members: int = typer.Option(5, min=1), epochs: int = typer.Option(60, min=1),
    hidden: int = typer.Option(16, min=4), seed: int = typer.Option(0),
    folds: int = typer.Option(0, min=0, help="also report k-fold cross-validated figures (0: skip)"),
    save: bool = typer.Option(True, help="write the weights and card"),
    weights: Path = typer.Option(WEIGHTS, help="where the weights go (the card beside, .json)"),
) -> None:
    from services.quality.simulate import simulate_folder

    sessions = sessions or SESSIONS_DIR / segmentation_fingerprint() / "coco_mval.jsonl"
    records = simulate_folder(data, sessions, limit=limit, repeats=repeats, missing=simulate)
    pairs = [(r["summary"], r["true_iou"]) for r in records]
    groups = [r["stem"] for r in records]
    if database_url:
        logged = logged_sessions(database_url)
        pairs += logged
        groups += [s["session"].get("session_id", "") for s, _ in logged]
    items = featurise([s for s, _ in pairs])
    ious = np.asarray([v for _, v in pairs], np.float32)
    typer.echo(f"{len(items)} sessions, mean IoU {ious.mean():.3f}, {(ious < DEFAULT_THRESHOLD).mean():.1%} "
               f"below {DEFAULT_THRESHOLD}")
    fit_args = {"members": members, "epochs": epochs, "hidden": hidden, "seed": seed}
    cv = {}
    if folds:
        cv = cross_validate(items, ious, groups, folds, **fit_args)
        typer.echo(f"{folds}-fold cross-validation on the training sessions: {json.dumps(cv)}")
    if not save:
        return
    started = time.time()
    ensemble = fit(items, ious, **fit_args)
    weights.parent.mkdir(parents=True, exist_ok=True)
    torch.save(ensemble.state(), weights)
    card_path = weights.with_suffix(".json")
    card = {
        "model_name": MODEL_NAME,
        "training_command": "python -m services.quality.train " + shlex.join(sys.argv[1:]),
        "training_data": str(data), "training_sessions": len(items),
        "training_sessions_logged": len(items) - len(records),
        "train_time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
        "default_threshold": DEFAULT_THRESHOLD, "thresholds": list(THRESHOLDS),
        "step_features": list(features.STEP_FEATURES), "session_features": list(features.SESSION_FEATURES),
        "fit": fit_args, "cross_validation": cv,
        "evaluation": {},  # filled by services.quality.evaluate --update-card
        "note": "retrain after the segmentation model changes: the features read its masks and confidences",
    }
    card_path.write_text(json.dumps(card, indent=1) + "\n")
    typer.echo(f"wrote {weights} and {card_path}")


if __name__ == "__main__":
    app()
