"""The refinement benchmark's parts: what each variant computes and the sets it reads."""

from __future__ import annotations

import json

import numpy as np
import pytest
import typer
from PIL import Image

from bench import click_refinement
from services.common.clicks import Click
from services.common.settings import served_model_dir
from services.models import grabcut

pytestmark = pytest.mark.unit


def test_the_gated_variant_keeps_the_cut_only_where_it_agrees_with_the_network(monkeypatch):
    prob = np.zeros((40, 40), np.float32)
    prob[10:30, 10:30] = 0.9
    close, far = prob.copy(), np.zeros_like(prob)
    close[10:30, 10:31] = 1.0  # IoU 0.95 with the network's mask
    far[0:10, 0:10] = 1.0  # nothing in common
    gated = click_refinement.refiner("grabcut-gated")
    for cut, kept in ((close, True), (far, False)):
        monkeypatch.setattr(grabcut, "refine", lambda image, p, clicks, cut=cut: cut)
        out = gated(np.zeros((40, 40, 3), np.uint8), prob, [Click(20, 20, True)])
        assert (out is cut) == kept and (out is prob) == (not kept)
    assert click_refinement.refiner("grabcut") is grabcut.refine and click_refinement.refiner("network") is None


def test_video_frames_take_every_step_th_frame_of_each_sequence(tmp_path):
    for sequence, count in (("a", 5), ("b", 2)):
        for i in range(count):
            for folder, array in (("frames", np.full((6, 8, 3), i, np.uint8)), ("masks", np.full((6, 8), 255, np.uint8))):
                (tmp_path / sequence / folder).mkdir(parents=True, exist_ok=True)
                Image.fromarray(array).save(tmp_path / sequence / folder / f"{i:05d}.{'jpg' if folder == 'frames' else 'png'}")
    samples = click_refinement.video_frames(tmp_path, step=2)
    assert [s.stem for s in samples] == ["a/00000", "a/00002", "a/00004", "b/00000"]
    assert samples[0].image.shape == (6, 8, 3) and samples[0].annotation.shape == (6, 8)


def test_one_variant_on_one_image_reports_noc_and_time(tmp_path):
    card = json.loads((served_model_dir() / "1" / "training.json").read_text())
    assert len(card["val_stems"]) == 60  # the held-out set the benchmark reads
    sample = click_refinement.load_folder(click_refinement.DATA / "grabcut")[:1]
    figures = click_refinement.run_variant("network", {"one": sample}, served_model_dir())
    one = figures["one"]
    assert one["images"] == 1 and 1 <= one["noc90"] <= 20 and one["p95_ms"] >= one["p50_ms"] > 0


def test_a_knob_variant_runs_the_network_with_that_setting():
    """``--knob size=64``: the network sees the image at 64 px, not the served 256, and answers otherwise."""
    assert click_refinement.knob_variant("size=64") == "network:size=64"
    assert click_refinement.knob_variant("expand=1.25") == "network:expand=1.25"
    for bad in ("radius=3", "size", "size=big", "expand=0", "size=384.5"):
        with pytest.raises(typer.BadParameter):
            click_refinement.knob_variant(bad)
    sample = click_refinement.load_folder(click_refinement.DATA / "grabcut")[:1]
    served = click_refinement.run_variant("network", {"one": sample}, served_model_dir())["one"]
    coarse = click_refinement.run_variant("network:size=64", {"one": sample}, served_model_dir())["one"]
    assert abs(coarse["miou_at_1"] - served["miou_at_1"]) > 0.005  # deterministic: equal if the knob were lost
