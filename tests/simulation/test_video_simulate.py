"""The simulation command line end to end (--quick) on one real sequence: JSON and PNG written."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from services.simulation.video_simulate import TARGETS, needed, summarize
from tests.conftest import REPO

pytestmark = pytest.mark.unit


def test_quick_simulation_writes_json_and_png(video_data, tmp_path):
    out = tmp_path / "sim.json"
    proc = subprocess.run([sys.executable, "-m", "services.simulation.video_simulate", "--data", str(video_data),
                           "--out", str(out), "--sequences", "car-shadow", "--quick"],
                          cwd=REPO, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(out.read_text())
    (sequence,) = report["sequences"]
    assert sequence["sequence"] == "car-shadow" and sequence["frames"] == 8
    expected = {"every-frame-interactive", "every-k-flowwarp", "every-k-interpolate", "flowwarp-selected-frames",
                *(f"finetune-{g}" for g in ("frame", "rect64", "rect16", "superpixel"))}
    assert set(sequence["curves"]) == expected
    for name, curve in sequence["curves"].items():
        assert curve and all(c >= 1 and 0 <= m <= 1 for c, m in curve), name
    for name in expected - {"every-frame-interactive", "every-k-flowwarp", "every-k-interpolate"}:
        clicks = [c for c, _ in sequence["curves"][name]]
        assert clicks == sorted(clicks) and len(clicks) >= 2, name  # one human round after the first frame
    assert set(report["summary"]) == expected
    assert out.with_suffix(".png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "sequences" in proc.stderr  # the tqdm progress bar


def test_clicks_needed_and_summary():
    curve = [[10, 0.7], [25, 0.85], [40, 0.92], [30, 0.91]]
    assert needed(curve, 0.80) == 25 and needed(curve, 0.90) == 30 and needed(curve, 0.95) is None
    results = [{"needed": {"every-frame-interactive": {"0.8": 100, "0.9": 200, "0.95": None},
                           "finetune-frame": {"0.8": 40, "0.9": 90, "0.95": None}}}]
    table = summarize(results)
    assert table["finetune-frame"]["0.9"]["saving_vs_every_frame"] == pytest.approx(0.55)
    assert table["finetune-frame"]["0.95"]["reached"] == "0/1"
    assert len(TARGETS) == 3
