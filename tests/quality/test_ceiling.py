"""The ceiling analysis: what the true annotator profile and the encoder's view of the image add, from the
caches, with its files."""

import dataclasses
import json

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from services.quality import ceiling
from services.simulation.annotator import Profile
from tests.quality.helpers import H, W, make_summary

pytestmark = pytest.mark.unit


def records(n: int, seed: int) -> list[dict]:
    """Identical click sequences whose outcome only the annotator's target IoU tells."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        target = float(rng.uniform(0.7, 0.99))
        out.append({"key": f"img{i}:0:0", "stem": f"img{i}", "true_iou": target, "undos": 0,
                    "profile": dataclasses.asdict(Profile(target_iou=target)),
                    "summary": make_summary(f"s{i}")})
    return out


def test_the_true_profile_is_what_separates_sessions_the_clicks_cannot(tmp_path):
    train, test = records(60, 0), records(30, 1)
    data = folder(tmp_path / "data", [r["stem"] for r in train])  # one image for all: the same view
    report = ceiling.measure(train, test, seeds=1, data=data, eval_data=data, members=1, epochs=40)
    aucs = {name: v["roc_auc_mean"] for name, v in report["variants"].items()}
    oracle = next(name for name in aucs if "true profile" in name)
    assert aucs[oracle] > 0.95
    assert all(auc == pytest.approx(0.5, abs=0.05) for name, auc in aucs.items() if name != oracle)
    assert set(report["baselines"]) == {"click_count", "total_time", "final_confidence", "last_iou_change"}


def folder(root, stems):
    """An image/mask folder whose sessions the cache already holds, so nothing is simulated."""
    for sub in ("images", "masks"):
        (root / sub).mkdir(parents=True)
    image = np.random.default_rng(0).integers(0, 255, (H, W, 3), np.uint8)
    for stem in stems:
        Image.fromarray(image).save(root / "images" / f"{stem}.png")
        Image.fromarray(np.full((H, W), 255, np.uint8)).save(root / "masks" / f"{stem}.png")
    return root


def cache(path, recs):
    path.write_text("".join(json.dumps(r) + "\n" for r in recs))


def test_the_command_reads_the_caches_and_writes_json_and_plot(tmp_path):
    train, test = records(20, 0), records(10, 1)
    for r in test:
        r["key"] = r["key"].replace("img", "ev")
        r["stem"] = r["stem"].replace("img", "ev")
    sessions, out = tmp_path / "sessions", tmp_path / "ceiling.json"
    sessions.mkdir()
    cache(sessions / "train.jsonl", train)
    cache(sessions / "grab.jsonl", test)
    args = ["--out", str(out), "--data", str(folder(tmp_path / "train", [r["stem"] for r in train])),
            "--limit", "20", "--repeats", "1", "--eval-data", str(folder(tmp_path / "grab", [r["stem"] for r in test])),
            "--eval-repeats", "1", "--sessions-dir", str(sessions), "--seeds", "2", "--members", "1", "--epochs", "2"]
    result = CliRunner().invoke(ceiling.app, args)
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    assert (report["train_count"], report["eval_count"], len(report["variants"])) == (20, 10, 5)
    assert report["image_features"] == list(ceiling.image_features.FEATURES)
    assert all(len(v["per_seed"]) == 2 for v in report["variants"].values())
    assert out.with_suffix(".png").stat().st_size > 0
