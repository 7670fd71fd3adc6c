"""The loop benchmark end to end on a tiny synthetic project through the real stack (Redis, tritonserver in
explicit model-control mode, the segmentation, training and selection servers, the training and selection
workers): two rounds, the interactive model trained between them, and the second round clicked with the
version the training worker promoted and published to Triton."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
from PIL import Image

from bench.loop import BASE_MODEL, Item, Settings, round_picks, run
from services.common.published_models import triton_model_name
from services.training.snapshots import is_heldout

pytestmark = pytest.mark.integration
HELDOUT = 50


def write_project(root, count: int = 8, size: int = 128, seed: int = 0) -> None:
    """A red disc touching a blue disc on a noisy grey background with green distractors: one object of two
    colours, which the base network takes a click on each part for and fine-tuning learns to take whole."""
    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    stems, n = [], 0
    while len(stems) < count:  # half of the images held out by the training split, alternating
        stem = f"s{n:03d}"
        n += 1
        if is_heldout("loop-synthetic", stem, HELDOUT) == (len(stems) % 2 == 0):
            stems.append(stem)
    for stem in stems:
        image = rng.normal(120, 20, (size, size, 3)).clip(0, 255).astype(np.uint8)
        mask = np.zeros((size, size), np.uint8)
        for _ in range(2):
            cv2.circle(image, tuple(int(v) for v in rng.integers(10, size - 10, 2)), int(rng.integers(6, 12)),
                       (40, 200, 40), -1)
        r = int(rng.integers(14, 22))
        cx, cy = (int(v) for v in rng.integers(r + 4, size - 3 * r - 4, 2))
        angle = rng.uniform(0, 2 * np.pi)
        bx, by = int(cx + 2 * r * np.cos(angle)), int(cy + 2 * r * np.sin(angle))
        for x, y, colour in ((cx, cy, (220, 30, 30)), (bx, by, (30, 30, 220))):
            cv2.circle(image, (x, y), r, colour, -1)
            cv2.circle(mask, (x, y), r, 255, -1)
        Image.fromarray(image).save(root / "images" / f"{stem}.png")
        Image.fromarray(mask).save(root / "masks" / f"{stem}.png")


@pytest.mark.timeout(900)  # a shared 2-core machine; about 2 minutes alone
def test_two_rounds_train_publish_and_serve_a_new_interactive_version(tmp_path):
    data = tmp_path / "synthetic"
    write_project(data)
    # 12 fine-tuning iterations sufficed while GrabCut refined the base's masks; the network alone needs
    # 30 to learn to take both discs with one click (the gate rejected the 12-iteration candidate).
    settings = Settings(rounds=2, per_round=3, test_every=4, max_clicks=8, interactive_iterations=30,
                        interactive_crop=96, interactive_batch=4, interactive_lr=3e-3, task_steps=20, task_size=32,
                        heldout_percent=HELDOUT)
    out = tmp_path / "loop.json"
    report = run(data, out, settings, [])

    stored = json.loads(out.read_text())
    assert out.with_suffix(".png").stat().st_size > 0
    for key in ("click_saving_last_round", "al_gain_points", "command", "data", "timings", "projects"):
        assert key in stored
    rows = stored["projects"]["synthetic"]["rounds"]
    assert [r["round"] for r in rows] == [0, 1]
    assert rows[0]["training"]["interactive"]["state"] == "PROMOTED", rows[0]["training"]
    # Round 0 clicked with the frozen base network; round 1 with the version promoted after it, served by Triton.
    name = triton_model_name("loop-synthetic", "interactive")
    assert rows[0]["interactive_version"] == 0 and rows[1]["interactive_version"] >= 1
    assert all(v.startswith(f"{BASE_MODEL}:") for v in rows[0]["promoted"]["model_versions"])
    assert rows[1]["promoted"]["model_versions"] == [f"{name}:{rows[1]['interactive_version']}"]
    assert all(v.startswith(f"{BASE_MODEL}:") for v in rows[1]["frozen"]["model_versions"])
    assert report["click_saving_last_round"] == rows[1]["click_saving"]
    # Both arms gate on the same held-out images: the uniform arm is split by the strategy arm's key.
    assert all(row["split"]["uniform"]["key"] == row["split"]["strategy"]["key"] == "loop-synthetic"
               for row in rows)


@pytest.mark.unit
def test_without_a_task_model_the_strategy_arm_takes_the_uniform_arms_draw_while_their_images_agree():
    pool = [Item(f"s{n:02d}", np.zeros((1, 1, 3), np.uint8), np.zeros((1, 1), np.uint8), "", b"") for n in range(20)]
    no_model = lambda unlabelled: ([], "")  # noqa: E731
    same = {"strategy": ["s00", "s01"], "uniform": ["s01", "s00"]}
    picks, how = round_picks(no_model, pool, same, np.random.default_rng(0), 4)
    assert picks["strategy"] == picks["uniform"] and "uniform arm's draw" in how
    assert not set(picks["uniform"]) & {"s00", "s01"} and len(set(picks["uniform"])) == 4

    # Once the arms hold different images each draws from its own unlabelled images.
    apart = {"strategy": ["s00", "s01"], "uniform": ["s00", "s02"]}
    picks, how = round_picks(no_model, pool, apart, np.random.default_rng(0), 4)
    assert how == "uniform (no task model yet)"
    assert not set(picks["strategy"]) & {"s00", "s01"} and not set(picks["uniform"]) & {"s00", "s02"}
    assert picks["strategy"] != picks["uniform"]

    # With a task model the strategy's own choice stands, whatever the uniform arm drew.
    seen = []
    chosen = lambda unlabelled: (seen.extend(it.stem for it in unlabelled) or ["s19", "s18"], "combined")  # noqa: E731
    picks, how = round_picks(chosen, pool, same, np.random.default_rng(0), 2)
    assert picks["strategy"] == ["s19", "s18"] and how == "combined" and not {"s00", "s01"} & set(seen)
