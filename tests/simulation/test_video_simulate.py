"""The video simulation command end to end, in-process, on a few frames of one real sequence.

The command's own ``--quick`` run simulates 8 frames at 64/96 px and takes minutes on CPU; here each
sequence is simulated with a far smaller config (4 frames, 32/48 px, one step, one round), so the test
checks the command's plumbing and the shape of what it writes (JSON, PNG, the Markdown summary) in
seconds. The numbers themselves are the benchmark's business, not this test's.
"""

from __future__ import annotations

import json
from dataclasses import asdict

import pytest
import torch
from typer.testing import CliRunner

from services.simulation import video_simulate
from services.simulation.video_simulate import TARGETS, SimConfig, needed, summarize
from tests.conftest import SHARED_DATA

pytestmark = pytest.mark.unit

VIDEO_DATA = SHARED_DATA / "video"
TINY = SimConfig(short_side=32, click_side=48, max_frames=4, max_clicks=2, every_stride=2, rounds=1, steps=1,
                 first_steps=1, ks=(2,))
CURVES = {"every-frame-interactive", "every-k-flowwarp", "every-k-interpolate", "flowwarp-selected-frames",
          *(f"finetune-{g}" for g in ("frame", "rect64", "rect16", "superpixel"))}


@pytest.fixture
def one_torch_thread():
    """simulate_sequence sets one torch thread for its process; give the test process its setting back."""
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def test_the_command_simulates_each_sequence_and_writes_json_png_and_summary(tmp_path, monkeypatch,
                                                                             one_torch_thread):
    if not (VIDEO_DATA / "car-shadow" / "frames").is_dir():
        pytest.fail(f"{VIDEO_DATA} is missing: this test reads the DAVIS sequence car-shadow there")
    real = video_simulate.simulate_sequence
    asked: list[tuple[str, SimConfig]] = []

    def tiny(folder, config):
        asked.append((folder.name, config))
        return real(folder, TINY)

    monkeypatch.setattr(video_simulate, "simulate_sequence", tiny)
    out = tmp_path / "sim.json"
    result = CliRunner().invoke(video_simulate.app, ["--data", str(VIDEO_DATA), "--out", str(out),
                                                     "--sequences", "car-shadow", "--quick"])
    assert result.exit_code == 0, result.output
    ((name, config),) = asked  # one sequence asked for, with the --quick config
    assert name == "car-shadow" and (config.max_frames, config.rounds, config.short_side) == (8, 1, 64)

    report = json.loads(out.read_text())
    assert report["config"] == json.loads(json.dumps(asdict(config)))  # what the command ran, recorded
    (sequence,) = report["sequences"]
    assert sequence["sequence"] == "car-shadow" and sequence["frames"] == TINY.max_frames
    assert sequence["every_frame_sampled"] == [0, 2]
    assert set(sequence["curves"]) == CURVES and set(sequence["needed"]) == CURVES
    for curve_name, curve in sequence["curves"].items():
        assert curve and all(c >= 1 and 0 <= m <= 1 for c, m in curve), curve_name
    for curve_name in CURVES - {"every-frame-interactive", "every-k-flowwarp", "every-k-interpolate"}:
        clicks = [c for c, _ in sequence["curves"][curve_name]]
        # the first frame, then one human round (TINY.rounds) that costs clicks
        assert len(clicks) == 2 and clicks[0] < clicks[1], curve_name
    assert set(report["summary"]) == CURVES
    assert out.with_suffix(".png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "| finetune-frame |" in result.stdout  # the Markdown summary table


def test_clicks_needed_and_summary():
    curve = [[10, 0.7], [25, 0.85], [40, 0.92], [30, 0.91]]
    assert needed(curve, 0.80) == 25 and needed(curve, 0.90) == 30 and needed(curve, 0.95) is None
    results = [{"needed": {"every-frame-interactive": {"0.8": 100, "0.9": 200, "0.95": None},
                           "finetune-frame": {"0.8": 40, "0.9": 90, "0.95": None}}}]
    table = summarize(results)
    assert table["finetune-frame"]["0.9"]["saving_vs_every_frame"] == pytest.approx(0.55)
    assert table["finetune-frame"]["0.95"]["reached"] == "0/1"
    assert len(TARGETS) == 3
